"""The `dubtool` command line: a thin Typer app. Each command lives in dubtool/commands/<name>.py,
parses its options, calls one function of its pipeline stage and prints the result.

Errors a user can cause (DubtoolError) become one red line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from . import __version__
from .errors import DubtoolError

app = typer.Typer(
    name="dubtool",
    help="Dialogue localization for 3D facial animation: lip-synced ARKit curves for a dub that keep "
         "the actor's upper-face performance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

# Command modules, in the order `dubtool --help` lists them. Each registers its commands on `app`
# at import and keeps heavy imports (torch, mediapipe, moderngl) inside its functions.
COMMAND_MODULES = ("setup", "extract", "align", "localize", "keyframes", "render", "export", "train", "eval",
                   "rig_sheet")


def _version(value: bool) -> None:
    if value:
        print(f"dubtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


for _name in COMMAND_MODULES:
    try:
        importlib.import_module(f"dubtool.commands.{_name}")
    except ModuleNotFoundError as _e:
        if _e.name != f"dubtool.commands.{_name}":
            raise


def main() -> None:
    try:
        app(standalone_mode=False)
    except DubtoolError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("[red]aborted[/]")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()

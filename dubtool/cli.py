"""The `dubtool` command line: a thin Typer app. Each command lives in dubtool/commands/<name>.py,
parses its options, calls one function of its pipeline stage and prints the result.

Errors a user can cause (DubtoolError) become one red line on stderr and a non-zero exit.
"""

from __future__ import annotations

import functools
import importlib
import sys

import typer

from . import __version__
from .errors import DubtoolError

app = typer.Typer(
    name="dubtool",
    help="Dialogue localization for 3D facial animation: lip-synced ARKit curves for a dub that keep "
         "the actor's upper-face performance.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text: Typer's rich help formatter imports rich.markdown, markdown-it, pygments and attrs,
    # which doubled the cost of `dubtool --help` (docs/benchmarks.md, start-up).
    rich_markup_mode=None,
)


@functools.cache
def stderr_console():
    """The rich Console on stderr, built on first use: importing rich.console costs ~40 ms of every
    start-up, and `--help` or a finished command may never print to stderr."""
    from rich.console import Console

    # soft_wrap: a message is one line however narrow the terminal (or 80 columns when stderr is
    # piped); the terminal wraps it, rich never inserts newlines.
    console = Console(stderr=True, soft_wrap=True)
    console.quiet = _quiet
    return console


@functools.cache
def _error_console():
    """Errors print even with --quiet."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def __getattr__(name: str):
    # `from dubtool.cli import err_console` (PEP 562 module attribute): the same lazily built console.
    if name == "err_console":
        return stderr_console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Command modules, in the order `dubtool --help` lists them. Each registers its commands on `app`
# at import and keeps heavy imports (torch, mediapipe, moderngl) inside its functions.
COMMAND_MODULES = ("setup", "extract", "align", "localize", "review", "keyframes", "render", "export", "corpus",
                   "train", "eval", "rig_sheet")


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


# Exit codes (docs/errors.md): 0 done, 1 a batch finished with failed rows, 2 a user error (bad input,
# bad option, unwritable output), 3 an internal error (a bug: please report), 130 Ctrl-C, 143 SIGTERM.
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


# `--json` and `--quiet` (dubtool.commands.JSON_OPTION / QUIET_OPTION): read from the command line before
# parsing, so that a usage error of a `--json` run is an error object too; the options' callbacks set them
# again for in-process callers.
_json_errors = False
_quiet = False


def _command_word(argv: list[str]) -> str | None:
    """The command named in argv (its first word that is not an option), None for bare `dubtool`."""
    return next((a for a in argv if not a.startswith("-")), None)


def _requested_modes(argv: list[str]) -> tuple[bool, bool]:
    """(--json, --quiet) of the command in argv. `eval --json FILE` writes a file: only `--json -` is
    the stdout result there."""
    command = _command_word(argv)
    if command is None:
        return False, False
    rest = argv[argv.index(command) + 1:]
    if "--" in rest:
        rest = rest[:rest.index("--")]
    if command == "eval":
        as_json = any(a == "--json" and rest[i + 1:i + 2] == ["-"] for i, a in enumerate(rest)) or "--json=-" in rest
    else:
        as_json = "--json" in rest
    return as_json, "--quiet" in rest or "-q" in rest


def set_output_mode(as_json: bool | None = None, quiet: bool | None = None) -> None:
    global _json_errors, _quiet
    if as_json is not None:
        _json_errors = as_json
    if quiet is not None:
        _quiet = quiet
        if stderr_console.cache_info().currsize:
            stderr_console().quiet = quiet


def output_mode() -> dict:
    return {"json": _json_errors, "quiet": _quiet}


def _error_line(message: str, exit_code: int | None = None) -> None:
    """One red line on stderr, whatever the message holds (newlines folded, no rich markup); with
    `--json`, also {"error": ..., "exit_code": ...} on stdout for a script to parse."""
    from rich.markup import escape

    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "unknown error"
    _error_console().print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    if _json_errors and exit_code is not None:
        import json

        try:
            sys.stdout.write(json.dumps({"error": text, "exit_code": exit_code}) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings from the stages reach the user as one yellow line, not Python's file:line form."""
    from rich.markup import escape

    if _quiet:
        return
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    stderr_console().print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def _click_exception_types() -> tuple[type, ...]:
    # Typer >= 0.16 ships its own copy of click (typer._click); older ones use click itself.
    types = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(importlib.import_module(name).ClickException)
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def _usage_message(e: Exception) -> str:
    msg = e.format_message() if hasattr(e, "format_message") else str(e)
    ctx = getattr(e, "ctx", None)
    if ctx is not None and getattr(ctx, "command_path", None):
        msg += f" (see `{ctx.command_path} --help`)"
    return msg


class _Terminated(BaseException):
    """SIGTERM as an exception (a BaseException, so nothing on the way catches it as an error)."""


_MAIN_PID = None


def _on_sigterm(signum, frame) -> None:
    # `timeout`, `kill` and job schedulers send SIGTERM: unwind like Ctrl-C so atomic writes clean up.
    # Forked workers inherit this handler; they die as usual (their pool terminates them this way).
    import os
    import signal

    if os.getpid() != _MAIN_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise _Terminated()


# Options whose value may be left out (Typer has none): `--ray` alone means the Ray on this machine.
OPTIONAL_VALUES = {"--ray": "local"}


def _fill_optional_values(argv: list[str]) -> list[str]:
    out = []
    for i, a in enumerate(argv):
        out.append(a)
        if a in OPTIONAL_VALUES and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[a])
    return out


def thread_defaults() -> None:
    """Thread settings of the `dubtool` command, unless the environment sets them (read when numpy and
    torch load, so before either is imported; batch workers inherit them):
    * torch's OpenMP threads spin at every barrier by default; on a machine whose cores other jobs share,
      that made generation with 2 threads 8x slower than with 1 (docs/benchmarks.md). Waiting threads
      sleep instead; OMP_WAIT_POLICY=ACTIVE brings the spinning back.
    * numpy's OpenBLAS keeps a second thread spinning after each product: on the small products of a
      line (mel filter bank, alignment) it burnt a core for nothing, half the CPU of a batch line (280
      -> 140 ms per 5 s line) and the core a second worker or ONNX Runtime's second thread needs. One
      BLAS thread; OPENBLAS_NUM_THREADS=2 restores it."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# glibc raises its mmap threshold (up to 32 MB) each time a large block is freed; numpy's multi-MB temporaries
# then come from the heap and fragment it, and resident memory creeps with the input's length (localize's
# groups, extract's frames: docs/errors.md, "Memory on long inputs"). A fixed threshold keeps blocks of
# 128 KiB (glibc's starting value) and more mmapped, handed back to the system when freed. MALLOC_MMAP_THRESHOLD_ in the environment wins.
# Not for `train`: a training loop allocates the same tensors every step and holds its corpus whole, so
# there each step's blocks were mapped and unmapped afresh (a `train --captures` step 0.63 s instead of
# 0.30 s, a third of it in the kernel); glibc's own threshold lets the heap reuse them.
MMAP_THRESHOLD_BYTES = 128 << 10
HEAP_COMMANDS = ("train",)


def _fix_mmap_threshold(argv: list[str]) -> None:
    import os

    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or _command_word(argv) in HEAP_COMMANDS:
        return
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, MMAP_THRESHOLD_BYTES)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def main() -> None:
    import os
    import signal

    import warnings

    global _MAIN_PID
    sys.argv[1:] = _fill_optional_values(sys.argv[1:])
    set_output_mode(*_requested_modes(sys.argv[1:]))
    thread_defaults()
    _fix_mmap_threshold(sys.argv[1:])
    if not os.environ.get("DUBTOOL_DEBUG"):
        warnings.showwarning = _warning_line
    if threading_main():
        _MAIN_PID = os.getpid()
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # Outside standalone mode Typer turns Ctrl-C into a returned 130 and typer.Exit(n) into a returned n.
        code = app(standalone_mode=False)
        sys.stdout.flush()
        if code == EXIT_INTERRUPTED:
            _error_line("interrupted; no partial output was left", EXIT_INTERRUPTED)
        if isinstance(code, int) and code:
            sys.exit(code)
    except _Terminated:
        _error_line("terminated; no partial output was left", EXIT_TERMINATED)
        sys.exit(EXIT_TERMINATED)
    except DubtoolError as e:
        _error_line(str(e), e.exit_code)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _error_line("aborted", EXIT_INTERRUPTED)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        _error_line("interrupted; no partial output was left", EXIT_INTERRUPTED)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        # stdout was closed early (`dubtool ... | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except Exception as e:
        click_types = _click_exception_types()
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `dubtool` (or a group alone): show the help
            print(e.format_message())  # on stdout, as `dubtool --help` (plain help text: click leaves it to us)
            sys.exit(0)
        if click_types and isinstance(e, click_types):  # usage errors: bad option value, missing argument
            _error_line(_usage_message(e), e.exit_code or EXIT_USER_ERROR)
            sys.exit(e.exit_code or EXIT_USER_ERROR)
        if type(e).__name__ == "Exit" and hasattr(e, "exit_code"):  # click's Exit (e.g. --help)
            sys.exit(e.exit_code)
        if os.environ.get("DUBTOOL_DEBUG"):
            raise
        if isinstance(e, MemoryError):
            _error_line("out of memory; try a shorter input or smaller sizes", EXIT_USER_ERROR)
            sys.exit(EXIT_USER_ERROR)
        if isinstance(e, OSError) and e.strerror:
            where = f": {e.filename}" if e.filename else ""
            _error_line(f"{e.strerror}{where}", EXIT_USER_ERROR)
            sys.exit(EXIT_USER_ERROR)
        _error_line(f"internal error: {type(e).__name__}: {e} (run again with DUBTOOL_DEBUG=1 for the "
                    f"traceback, and please report it)", EXIT_INTERNAL_ERROR)
        sys.exit(EXIT_INTERNAL_ERROR)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    main()

"""One module per `dubtool` command; each registers itself on `dubtool.cli.app`.

What every command shares lives here (docs/errors.md, "Scripts and CI"): the `--json` and `--quiet`
options, the result printer, the progress switch, and `-` as stdin/stdout. The error side (one line on
stderr, an error object on stdout with `--json`) is dubtool.cli.main's.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterable, Iterator

import typer


def _json_callback(value: bool) -> bool:
    if value:
        from ..cli import set_output_mode

        set_output_mode(as_json=True)
    return value


def _quiet_callback(value: bool) -> bool:
    if value:
        from ..cli import set_output_mode

        set_output_mode(quiet=True)
    return value


JSON_OPTION = typer.Option(False, "--json", callback=_json_callback,
                           help="Print a result object (JSON) on stdout; on failure an error object "
                                "{\"error\": ..., \"exit_code\": N}.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", callback=_quiet_callback,
                            help="Nothing on stderr but errors (no progress, summaries or warnings).")


def emit(as_json: bool, result: dict, lines: Iterable[str] = ()) -> None:
    """A command's result: the JSON object with --json, else its human lines (stdout, one per line)."""
    if as_json:
        import json

        sys.stdout.write(json.dumps(result, indent=1, ensure_ascii=False, default=str) + "\n")
    else:
        for line in lines:
            print(line)
    sys.stdout.flush()


def show_progress(quiet: bool = False) -> bool:
    """Progress bars and spinners only on a terminal (stderr), never when piped or with --quiet."""
    from ..cli import output_mode, stderr_console

    return stderr_console().is_terminal and not quiet and not output_mode()["quiet"]


@contextlib.contextmanager
def stdin_file(path: str | None, what: str) -> Iterator[str | None]:
    """`-` as an input: stdin copied to a temporary file (ffmpeg needs to seek), removed afterwards."""
    if path != "-":
        yield path
        return
    import os
    import shutil
    import tempfile

    from ..errors import InputError

    if sys.stdin is None or sys.stdin.isatty():
        raise InputError(f"{what} is '-' (stdin) but stdin is a terminal: pipe the file in (... < dub.wav)")
    fd, tmp = tempfile.mkstemp(prefix="dubtool-stdin-")
    try:
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
        if os.path.getsize(tmp) == 0:
            raise InputError(f"{what} is '-' (stdin) but nothing came on stdin")
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def stdout_file(path: str | None, suffix: str, as_json: bool, option: str = "-o") -> Iterator[str | None]:
    """`-o -`: the command writes a temporary file, copied to stdout once it is complete (so a failure
    prints nothing)."""
    if path != "-":
        yield path
        return
    import os
    import shutil
    import tempfile

    from ..errors import InputError

    if as_json:
        raise InputError(f"{option} - and --json both write to stdout: give one of them")
    folder = tempfile.mkdtemp(prefix="dubtool-stdout-")
    tmp = os.path.join(folder, "stdout" + suffix)
    try:
        yield tmp
        sys.stdout.flush()
        with open(tmp, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

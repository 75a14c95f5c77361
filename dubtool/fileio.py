"""Atomic file writes: outputs appear whole or not at all (temp file in the same folder + rename)."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import signal
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temp name keeps the final suffix so tools that sniff extensions (ffmpeg) still work. Inside a
    `staged_outputs()` block that names `path`, the rename waits for the end of that block.
    """
    dest = Path(path)
    if dest.is_dir():
        raise InputError(f"cannot write {dest}: it is a folder; give a file name")
    parent = dest.parent if str(dest.parent) else Path(".")
    stage = _STAGE.get()
    staged = stage is not None and stage.holds(dest)
    created: list[Path] = []
    # Ctrl-C / SIGTERM are held back until the temp file is in the try/finally that removes it.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        # A missing output folder is created (like `mkdir -p`); one that cannot be is a clear error.
        created = _make_folders(parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix if suffix is not None else dest.suffix,
                                   dir=parent)
    except OSError as e:
        _remove_folders(created)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise InputError(f"cannot write {dest}: {_write_problem(e, parent)}") from None
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    _LIVE_TEMPS.add(str(tmp_path))
    if staged:
        stage.folders.extend(created)
        created = []
    handed_over = False
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        # mkstemp creates 0600; give outputs the usual permissions (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        try:
            yield tmp_path
        except OSError as e:
            if e.errno in _FULL:
                raise InputError(f"cannot write {dest}: {_write_problem(e, parent)}") from None
            raise
        if staged:
            stage.defer(tmp_path, dest)
            handed_over = True
        else:
            try:
                os.replace(tmp_path, dest)
            except OSError as e:
                raise InputError(f"cannot write {dest}: {_write_problem(e, parent)}") from None
            created = []
    finally:
        if not handed_over:
            _discard(tmp_path)
            _remove_folders(created)


# Errors that mean the disk (or the process's file-size limit, `ulimit -f`) is full.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)

# Temp files being written now: a worker killed by a signal removes them (see remove_live_temps).
_LIVE_TEMPS: set[str] = set()


def _discard(tmp: Path) -> None:
    _LIVE_TEMPS.discard(str(tmp))
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


def remove_live_temps() -> None:
    """Remove every temp file this process is writing (for a signal handler that exits at once)."""
    for tmp in list(_LIVE_TEMPS):
        try:
            os.unlink(tmp)
        except OSError:
            pass
    _LIVE_TEMPS.clear()


def _make_folders(folder: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, deepest first (to remove them again on failure)."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_folders(folders: list[Path]) -> None:
    for f in folders:
        try:
            f.rmdir()
        except OSError:
            break  # not empty (something else was written there) or gone: leave it


def _output_key(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


class _Stage:
    """Outputs of one command, held as temp files until all of them are written."""

    def __init__(self, dests: list) -> None:
        self.order = {_output_key(d): i for i, d in enumerate(dests)}
        self.pending: dict[str, tuple[Path, Path]] = {}   # key -> (temp, dest)
        self.folders: list[Path] = []

    def holds(self, dest: Path) -> bool:
        return _output_key(dest) in self.order

    def defer(self, tmp: Path, dest: Path) -> None:
        key = _output_key(dest)
        if key in self.pending:  # written twice: the later one wins
            _discard(self.pending[key][0])
        self.pending[key] = (tmp, dest)

    def commit(self) -> None:
        for key in sorted(self.pending, key=self.order.__getitem__):
            tmp, dest = self.pending[key]
            try:
                os.replace(tmp, dest)
            except OSError as e:
                raise InputError(f"cannot write {dest}: {_write_problem(e, dest.parent)}") from None
            del self.pending[key]
            _LIVE_TEMPS.discard(str(tmp))
        self.folders = []

    def discard(self) -> None:
        for tmp, _ in self.pending.values():
            _discard(tmp)
        self.pending.clear()
        _remove_folders(sorted(set(self.folders), key=lambda p: len(p.parts), reverse=True))


_STAGE: contextvars.ContextVar[_Stage | None] = contextvars.ContextVar("dubtool_staged_outputs", default=None)


@contextlib.contextmanager
def staged_outputs(*paths: str | os.PathLike | None) -> Iterator[None]:
    """All or nothing for a command's outputs: what the block writes (through atomic_path) to one of
    `paths` stays in temp files, renamed into place together when the block succeeds, in the order
    given (a batch's resume marker goes last); any failure removes them all, and the folders made
    for them. Other files written inside the block (scratch files) are not held back."""
    stage = _Stage([p for p in paths if p])
    token = _STAGE.set(stage)
    try:
        yield
        stage.commit()
    finally:
        _STAGE.reset(token)
        stage.discard()


def _write_problem(e: OSError, parent: Path) -> str:
    """What to tell the user when an output cannot be created in `parent`."""
    if isinstance(e, PermissionError) or e.errno == errno.EROFS:
        return f"folder {parent} is not writable (read-only or no permission)"
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return f"{_first_non_folder(parent)} is not a folder"
    if isinstance(e, IsADirectoryError):
        return "it is a folder; give a file name"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the disk"
    if e.errno == errno.EFBIG:
        return "file too large (the disk's or `ulimit -f` file-size limit)"
    return e.strerror or str(e)


def _first_non_folder(path: Path) -> Path:
    for p in reversed((path, *path.parents)):
        if p.exists() and not p.is_dir():
            return p
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def require_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """Return `path` as a Path, or raise a clear InputError if it is not a readable file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if not p.is_file():
        raise InputError(f"{what} is not a file: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} is empty: {p}")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} is not readable (permission denied): {p}")
    return p


def require_inputs(*named: tuple[str | os.PathLike | None, str]) -> None:
    """`require_file` on each (path, what) in order, skipping None. Commands call it before importing
    their stage (numpy, torch, mediapipe), so a mistyped path fails in a fraction of a second; the
    stage checks again with the same words."""
    for path, what in named:
        if path is not None:
            require_file(path, what)


def require_writable(*paths: str | os.PathLike | None) -> None:
    """Fail early, before any work, when an output cannot be created: a folder given as the file, a
    parent that is a file, or a read-only folder. Nothing is created (missing folders come later)."""
    for path in paths:
        if path is None:
            continue
        dest = Path(path)
        if dest.is_dir():
            raise InputError(f"cannot write {dest}: it is a folder; give a file name")
        folder = dest.parent if str(dest.parent) else Path(".")
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise InputError(f"cannot write {dest}: {_first_non_folder(folder)} is not a folder")
        # Ctrl-C / SIGTERM wait until the probe is gone (else it could be left behind).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".probe", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise InputError(f"cannot write {dest}: {_write_problem(e, folder)}") from None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _identity(path: str | os.PathLike) -> tuple:
    """What makes two paths the same file: (device, inode) of an existing file (symlinks and hard links
    followed), else the fully resolved path."""
    try:
        st = os.stat(path)
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.realpath(os.path.abspath(os.fspath(path))))


def _named(label: str, path) -> str:
    return f"{label} {path}" if label else str(path)


def require_distinct_outputs(inputs: dict[str, str | os.PathLike | None],
                             outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse, before any work, an output that is one of the inputs or that two outputs share.

    `inputs` and `outputs` map how the user named each file ("-o", "--csv", "VIDEO") to its path
    (None: not given). Same file = same device and inode when it exists (so a symlink or a hard link
    to an input counts), else the same resolved path. Nothing is written or removed."""
    seen_in: dict[tuple, tuple[str, str]] = {}
    for label, path in inputs.items():
        if path is not None and str(path) != "":
            seen_in.setdefault(_identity(path), (label, str(path)))
    seen_out: dict[tuple, tuple[str, str]] = {}
    for label, path in outputs.items():
        if path is None or str(path) == "":
            continue
        key = _identity(path)
        if key in seen_in:
            in_label, in_path = seen_in[key]
            same = "" if os.path.abspath(in_path) == os.path.abspath(os.fspath(path)) else f" ({in_path})"
            raise InputError(f"{_named(label, path)} is the input {in_label}{same}: writing it would destroy the "
                             f"input; give another output name")
        if key in seen_out:
            other_label, other_path = seen_out[key]
            raise InputError(f"{_named(label, path)} and {_named(other_label, other_path)} are the same file; "
                             f"give each output its own name")
        seen_out[key] = (label, str(path))

"""Atomic file writes: outputs appear whole or not at all (temp file in the same folder + rename)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temp name keeps the final suffix so tools that sniff extensions (ffmpeg) still work.
    """
    dest = Path(path)
    if dest.is_dir():
        raise InputError(f"cannot write {dest}: it is a folder; give a file name")
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        # A missing output folder is created (like `mkdir -p`); one that cannot be is a clear error.
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix if suffix is not None else dest.suffix,
                                   dir=parent)
    except OSError as e:
        raise InputError(f"cannot write {dest}: {_write_problem(e, parent)}") from None
    os.close(fd)
    # mkstemp creates 0600; give outputs the usual permissions (0666 minus the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InputError(f"cannot write {dest}: {_write_problem(e, parent)}") from None
            raise
        try:
            os.replace(tmp_path, dest)
        except OSError as e:
            raise InputError(f"cannot write {dest}: {_write_problem(e, parent)}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".probe", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise InputError(f"cannot write {dest}: {_write_problem(e, folder)}") from None


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

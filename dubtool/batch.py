"""Batch localization from a manifest CSV: many lines in parallel worker processes.

Manifest columns (header row required, order free): source, dub, lang, output, and optionally
dub_text, source_text, keyframes. Relative paths are relative to the manifest's folder.
The marks CSV that a review page (`dubtool review`) exports is a manifest too, with two more columns:
review (approve | flag | empty) and comment; its flagged rows are redone, approved ones skipped.

* Workers are spawned processes; each loads the flow model once (`localize.get_generator` caches it).
* Resumable: a row whose output CSV exists is skipped (outputs are written atomically and the CSV
  last, so an existing CSV is a finished line); `force` redoes them.
* Workers die with the batch (kill -9 of the parent included); Ctrl-C / SIGTERM stop them at once,
  keeping finished lines. A second batch writing into the same output folder meanwhile refuses.
* A failing row is reported and the rest go on; results are written as CSV and JSON beside the
  manifest (`<manifest>.results.csv/.json`).
* `ray=ADDRESS` runs the rows on a Ray cluster instead of local processes, same semantics
  (`raybatch`, imported only then; docs/ray.md).
* An output may be an fsspec URL (s3://bucket/fr/a.csv; needs that scheme's package, e.g. s3fs): the
  line is made in a local temp folder, then its report and, last, its CSV are uploaded.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

from .batchrow import ManifestRow, RowResult, is_uri, output_exists, run_row
from .errors import DubtoolError, InputError
from .fileio import require_file, write_text_atomic
from .localize import LocalizeOptions

__all__ = ["ManifestRow", "RowResult", "is_uri", "output_exists", "read_manifest", "run_manifest", "run_row",
           "write_results"]

REQUIRED_COLUMNS = ("source", "dub", "lang", "output")
OPTIONAL_COLUMNS = ("dub_text", "source_text", "keyframes")
REVIEW_COLUMNS = ("review", "comment")  # written by the review page's marks export
REVIEW_MARKS = ("approve", "flag")


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Rows of a manifest CSV; InputError naming the line for anything malformed."""
    p = require_file(path, "manifest")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not a text CSV file ({e.reason})") from None
    reader = csv.reader(text.splitlines())
    rows = [(i + 1, r) for i, r in enumerate(reader) if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{p}: empty manifest")
    header = [h.strip().lower() for h in rows[0][1]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{p}: line {rows[0][0]}: missing column(s) {', '.join(missing)} "
                         f"(need {', '.join(REQUIRED_COLUMNS)}; optional {', '.join(OPTIONAL_COLUMNS)})")
    unknown = [h for h in header if h and h not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS + REVIEW_COLUMNS]
    if unknown:
        raise InputError(f"{p}: line {rows[0][0]}: unknown column(s) {', '.join(unknown)}")
    base = p.parent
    out: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for line, r in rows[1:]:
        if len(r) > len(header):
            raise InputError(f"{p}: line {line}: {len(r)} cells, header has {len(header)}")
        cells = {h: (r[i].strip() if i < len(r) else "") for i, h in enumerate(header)}
        for c in REQUIRED_COLUMNS:
            if not cells.get(c):
                raise InputError(f"{p}: line {line}: empty '{c}'")

        def path_of(v: str | None) -> str | None:
            if not v:
                return None
            q = Path(v).expanduser()
            return str(q if q.is_absolute() else base / q)

        review = cells.get("review", "").lower() or None
        if review is not None and review not in REVIEW_MARKS:
            raise InputError(f"{p}: line {line}: review must be {' or '.join(REVIEW_MARKS)} (or empty), got '{review}'")
        output = cells["output"] if is_uri(cells["output"]) else path_of(cells["output"])
        if output in seen:
            raise InputError(f"{p}: line {line}: output {cells['output']} is also the output of line {seen[output]}")
        seen[output] = line
        out.append(ManifestRow(line, path_of(cells["source"]), path_of(cells["dub"]), cells["lang"], output,
                               cells.get("dub_text") or None, cells.get("source_text") or None,
                               path_of(cells.get("keyframes")), review, cells.get("comment") or None))
    if not out:
        raise InputError(f"{p}: manifest has a header but no rows")
    return out


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive the batch (kill -9 of the parent included): Linux delivers SIGTERM
    when the parent dies (PR_SET_PDEATHSIG); elsewhere, and for a parent that died before that was
    set, a watcher thread sees the parent change. SIGTERM removes this worker's temp files and exits;
    Ctrl-C reaches the parent only, which then stops the workers itself."""
    import signal
    import sys
    import threading

    from .fileio import remove_live_temps

    def on_term(signum, frame) -> None:
        remove_live_temps()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        import time

        while os.getppid() == parent_pid:
            time.sleep(0.5)
        on_term(signal.SIGTERM, None)

    if os.getppid() != parent_pid:
        on_term(signal.SIGTERM, None)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _worker_init(base: LocalizeOptions, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    from .generate import set_num_threads

    set_num_threads(1)  # ONNX Runtime sessions and torch (if the model runs on it): one thread per worker
    if base.model == "flow":
        from .localize import get_generator

        try:
            get_generator(base.model_path, base.device)
        except DubtoolError:
            pass  # each row then reports the model error itself


def run_manifest(manifest: str | os.PathLike, base: LocalizeOptions = LocalizeOptions(), workers: int | None = 1,
                 force: bool = False, on_result: Callable[[RowResult], None] | None = None,
                 ray: str | None = None, ray_device: str | None = None) -> list[RowResult]:
    """Process every row; returns one result per row in manifest order. Rows a reviewer flagged are
    redone even though their output exists (that is what the flag asks for); approved ones are skipped.
    `ray` (an address, or "local"): run the rows on a Ray cluster (`raybatch`), `workers` actors
    (None: one per CPU, or per GPU, of the cluster) on `ray_device` (None: cuda where it has GPUs)."""
    rows = read_manifest(manifest)
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    with batch_lock(rows):
        return _run_rows(rows, base, workers, force, on_result, ray, ray_device, Path(manifest).resolve().parent)


def _run_rows(rows: list[ManifestRow], base: LocalizeOptions, workers: int | None, force: bool,
              on_result: Callable[[RowResult], None] | None, ray: str | None = None,
              ray_device: str | None = None, shared_folder: Path | None = None) -> list[RowResult]:
    results: dict[int, RowResult] = {}
    todo = []
    for row in rows:
        if row.review == "approve":
            results[row.line] = RowResult(row.line, row.output, "skipped", 0.0, "approved in review")
            if on_result:
                on_result(results[row.line])
        elif not force and row.review != "flag" and output_exists(row.output):
            results[row.line] = RowResult(row.line, row.output, "skipped", 0.0, "output exists (use --force to redo)")
            if on_result:
                on_result(results[row.line])
        else:
            todo.append(row)
    if todo and ray is not None:
        from .raybatch import run_rows

        # closing: a Ctrl-C that lands here (not inside the generator) still stops the actors at once
        with contextlib.closing(run_rows(todo, base, ray, workers, ray_device, shared_folder or Path.cwd())) as done:
            for r in done:
                results[r.line] = r
                if on_result:
                    on_result(r)
    elif todo and (workers or 1) == 1:
        for row in todo:
            results[row.line] = r = run_row(row, base)
            if on_result:
                on_result(r)
    elif todo:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(max_workers=min(workers or 1, len(todo)), mp_context=mp.get_context("spawn"),
                                   initializer=_worker_init, initargs=(base, os.getpid()))
        try:
            futures = {pool.submit(run_row, row, base): row for row in todo}
            for fut in as_completed(futures):
                row = futures[fut]
                try:
                    r = fut.result()
                except Exception as e:  # the worker process died (out of memory, killed)
                    r = RowResult(row.line, row.output, "failed", 0.0, f"worker died: {type(e).__name__}: {e}")
                results[row.line] = r
                if on_result:
                    on_result(r)
        except BaseException:
            # Ctrl-C, SIGTERM or an error here: stop the workers now (each removes its temp files), keep
            # the finished lines; a rerun skips them.
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)
    return [results[row.line] for row in rows]


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(1)
    pool.shutdown(wait=False, cancel_futures=True)


LOCK_NAME = ".dubtool-batch.lock"


@contextlib.contextmanager
def batch_lock(rows: list[ManifestRow]) -> Iterator[None]:
    """One batch at a time per output folder: a second run writing into a folder that a running batch
    writes to refuses (instead of the last writer silently winning). An flock on a lock file in each
    output folder, released (and the file removed) when the batch ends, however it ends."""
    import fcntl

    held: list[tuple[int, Path]] = []
    try:
        for folder in sorted({Path(os.path.abspath(r.output)).parent for r in rows if not is_uri(r.output)}):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue  # the row itself will report the unwritable folder
            lock = folder / LOCK_NAME
            while True:
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
                except OSError:
                    fd = None
                    break
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    other = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                    os.close(fd)
                    raise InputError(f"another dubtool batch (pid {other}) is writing to {folder}; wait for it to "
                                     f"finish (or stop it) before starting this one") from None
                try:  # the file we locked must still be the one at that name (a finishing batch removes it)
                    same = os.fstat(fd).st_ino == os.stat(lock).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            if fd is None:
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            held.append((fd, lock))
        yield
    finally:
        for fd, lock in reversed(held):
            try:
                os.unlink(lock)
            except OSError:
                pass
            os.close(fd)


def results_paths(manifest: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(manifest)
    return p.with_name(p.stem + ".results.csv"), p.with_name(p.stem + ".results.json")


def write_results(results: list[RowResult], manifest: str | os.PathLike) -> tuple[Path, Path]:
    """Results as CSV and JSON beside the manifest (atomic)."""
    import io

    csv_path, json_path = results_paths(manifest)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["line", "output", "status", "seconds", "frames", "message"])
    for r in results:
        w.writerow([r.line, r.output, r.status, f"{r.seconds:.3f}", "" if r.frames is None else r.frames, r.message])
    write_text_atomic(csv_path, buf.getvalue())
    summary = {"manifest": str(Path(manifest).resolve()), "done": sum(r.status == "done" for r in results),
               "skipped": sum(r.status == "skipped" for r in results),
               "failed": sum(r.status == "failed" for r in results), "rows": [asdict(r) for r in results]}
    write_text_atomic(json_path, json.dumps(summary, indent=1) + "\n")
    return csv_path, json_path

"""One row of a batch manifest: its data types (`ManifestRow` in, `RowResult` out) and its job
(`run_row`: localize the line to its output path or fsspec URL, errors caught into the result).
Shared by the local scheduler (`batch`) and the Ray one (`raybatch`), which import it, not each other."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import DependencyError, DubtoolError, InputError
from .localize import LocalizeOptions, localize_files


@dataclass(frozen=True)
class ManifestRow:
    line: int            # line number in the manifest (for messages)
    source: str
    dub: str
    lang: str
    output: str
    dub_text: str | None = None
    source_text: str | None = None
    keyframes: str | None = None
    review: str | None = None    # "approve" | "flag" from a review page's marks export
    comment: str | None = None


@dataclass(frozen=True)
class RowResult:
    line: int
    output: str
    status: str          # "done" | "skipped" | "failed"
    seconds: float = 0.0
    message: str = ""
    frames: int | None = None


def _row_options(row: ManifestRow, base: LocalizeOptions) -> LocalizeOptions:
    return replace(base, lang=row.lang, dub_text=row.dub_text or base.dub_text,
                   source_text=row.source_text or base.source_text, keyframes=row.keyframes or base.keyframes)


def run_row(row: ManifestRow, base: LocalizeOptions) -> RowResult:
    """One manifest row, errors caught into the result (runs inside a worker)."""
    t0 = time.perf_counter()
    try:
        if is_uri(row.output):
            report = _localize_to_uri(row, _row_options(row, base))
        else:
            report = localize_files(row.source, row.dub, row.output, _row_options(row, base))
        return RowResult(row.line, row.output, "done", time.perf_counter() - t0, "", report["frames"])
    except DubtoolError as e:
        return RowResult(row.line, row.output, "failed", time.perf_counter() - t0, str(e))
    except Exception as e:  # an unexpected failure on one line must not stop the batch
        return RowResult(row.line, row.output, "failed", time.perf_counter() - t0,
                         f"internal error: {type(e).__name__}: {e}")


def is_uri(output: str) -> bool:
    """An output named by an fsspec URL (s3://bucket/fr/a.csv, gs://..., memory://...) instead of a path."""
    scheme, sep, _ = output.partition("://")
    return bool(sep) and scheme.isidentifier()


def _filesystem(uri: str):
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(uri)
    except ImportError as e:  # fsspec itself, or the package of that scheme (s3fs, gcsfs, adlfs)
        raise DependencyError(f"output {uri}: {e}") from None
    except ValueError as e:
        raise InputError(f"output {uri}: {e}") from None


def output_exists(output: str) -> bool:
    """Whether a row's output CSV is there (a finished line: it is written last)."""
    if not is_uri(output):
        return Path(output).is_file()
    fs, path = _filesystem(output)
    return fs.isfile(path)


def _localize_to_uri(row: ManifestRow, options: LocalizeOptions) -> dict:
    """A row whose output is a URI: localize into a local temp folder, then upload the report and,
    last, the CSV (an object store shows an object only once its upload is complete, so an existing
    CSV still means a finished line)."""
    import posixpath
    import tempfile

    from .localize import default_report_path
    from .timemap import compact_json

    fs, path = _filesystem(row.output)
    remote_report = posixpath.join(posixpath.dirname(path), default_report_path(posixpath.basename(path)).name)
    with tempfile.TemporaryDirectory(prefix="dubtool-") as td:
        local_csv = Path(td) / posixpath.basename(path)
        report = localize_files(row.source, row.dub, local_csv, options)
        report["outputs"] = {"csv": row.output, "report": fs.unstrip_protocol(remote_report)}
        local_report = default_report_path(local_csv)
        local_report.write_text(compact_json(report), encoding="utf-8")
        try:
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
            fs.put_file(str(local_report), remote_report)
            fs.put_file(str(local_csv), path)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot write {row.output}: {e}") from None
    return report

"""The review page of a dubbed batch: one static, self-contained HTML file a localization QA lead
opens from disk (file://, offline) to see which lines to check first.

The page lists every line of a manifest batch (`dubtool localize --manifest`) with its status and
the figures of its report (closure, lag, jitter, stretch, alignment cost, tracking gaps, warnings),
flags the lines past the thresholds of `Thresholds`, and shows one line at a time: the dub preview
and the source video side by side (the source time-mapped onto the dub, so both play in sync with
the dub audio), the curves and the time map. The reviewer's approve/flag marks live in the
browser's localStorage (keyed by the batch) and are exported as a marks CSV that is a manifest:
`dubtool localize --manifest marks.csv` redoes the flagged lines.

`build_html` is pure (line records in, HTML text out); `load_batch`, `render_previews` and
`write_review` are the I/O at the edges.
"""

from __future__ import annotations

import functools
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import numpy as np

from .errors import DubtoolError, InputError
from .fileio import require_writable, write_text_atomic
from .localize import VIDEO_SUFFIXES, default_report_path
from .plots import DEFAULT_CHANNELS

PAGE_VERSION = 1
# Curves are embedded as one character per frame: 64 levels of 0..1 (steps of 0.016), base64url letters.
CURVE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALPHABET_BYTES = np.frombuffer(CURVE_ALPHABET.encode("ascii"), np.uint8)
PREVIEW_SUFFIX = ".preview.mp4"


@dataclass(frozen=True)
class Thresholds:
    """When a line is flagged for a reviewer to check first (stated on the page)."""

    min_closure: float = 0.75      # share of the dub's /p b m/ on which the lips close
    max_stretch: float = 1.5       # a matched phrase played this much slower or faster than the source
    max_align_cost: float = 1.0    # cost of the worst matched phrase group (docs/localize.md)
    max_lag_frames: int = 2        # |lip-audio lag| in frames
    max_untracked: float = 0.05    # share of source frames without a tracked face

    def descriptions(self) -> dict[str, str]:
        return {
            "failed": "the line failed (its error is shown)",
            "bilabials": f"lips close on fewer than {self.min_closure:.0%} of the dub's /p b m/ (needs a dub_text)",
            "stretch": f"a matched phrase is stretched or squeezed more than {self.max_stretch:g}x against the source",
            "alignment": f"the worst matched phrase group costs more than {self.max_align_cost:g} "
                         "(speaking-rate mismatch, merged phrases, transcript anchors it disagrees with)",
            "tracking": f"the source take has a gap too long to interpolate (held still) or more than "
                        f"{self.max_untracked:.0%} of its frames without a tracked face",
            "lag": f"the mouth leads or lags the dub's speech by more than {self.max_lag_frames} frame(s)",
            "warning": "localize printed a warning for the line",
        }


@dataclass(frozen=True)
class LineRecord:
    """One line of the batch as the page shows it. Figures that are unknown are None."""

    id: str                      # absolute path of the output CSV: unique in a batch, the key of a mark
    line: int                    # line number in the manifest
    status: str                  # "done" | "failed" | "pending" (not run yet)
    message: str = ""            # the error of a failed line
    lang: str = ""
    source: str = ""
    dub: str = ""
    dub_text: str | None = None
    source_text: str | None = None
    keyframes: str | None = None
    duration_s: float | None = None
    source_duration_s: float | None = None
    stretch: float | None = None          # dub / source duration
    phrase_stretch: float | None = None   # worst matched phrase, as a factor >= 1 either way
    align_cost: float | None = None       # worst matched phrase group
    align_method: str | None = None
    phrases: tuple = ()                   # ((source_start, source_end, dub_start, dub_end), ...)
    knots: tuple = ()                     # ((source_s, dub_s), ...)
    closure: float | None = None
    bilabials: int | None = None
    lag_frames: int | None = None
    jitter: float | None = None
    face_found_ratio: float | None = None
    gaps: int | None = None
    long_gaps: int | None = None
    warnings: tuple[str, ...] = ()
    fps: float | None = None
    curves: dict = field(default_factory=dict)   # channel -> encoded string (CURVE_ALPHABET)
    preview: str | None = None
    source_video: str | None = None
    dub_audio: str | None = None          # the dub file, where it exists (the page plays it without a preview)
    updated: float | None = None          # mtime of the line's report (a mark older than this is stale)


# --- pure ---------------------------------------------------------------------------------------

def encode_curve(values: np.ndarray) -> str:
    """0..1 values -> one CURVE_ALPHABET character each (64 levels)."""
    v = np.asarray(values, np.float64)
    q = np.clip(np.rint(np.where(np.isfinite(v), v, 0.0) * 63), 0, 63).astype(np.intp)
    return _ALPHABET_BYTES[q].tobytes().decode("ascii")


def decode_curve(text: str) -> np.ndarray:
    lut = {c: i for i, c in enumerate(CURVE_ALPHABET)}
    return np.array([lut[c] for c in text], np.float64) / 63


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else None


def record_from_report(line: int, output: str, status: str, message: str = "", lang: str = "", source: str = "",
                       dub: str = "", dub_text: str | None = None, source_text: str | None = None,
                       keyframes: str | None = None, report: dict | None = None, curves: dict | None = None,
                       jitter: float | None = None, tracking: dict | None = None, preview: str | None = None,
                       source_video: str | None = None, dub_audio: str | None = None,
                       updated: float | None = None) -> LineRecord:
    """A LineRecord from a manifest row, its status and its report JSON (None for a line without
    one). `jitter`/`tracking` fill in figures older reports lack (from the CSV and the .perf)."""
    rep = report or {}
    tm = rep.get("timemap") or {}
    phrases = tuple((p["source"][0], p["source"][1], p["dub"][0], p["dub"][1]) for p in tm.get("phrases", [])
                    if p.get("source") and p.get("dub"))
    factors = [(d1 - d0) / (s1 - s0) for s0, s1, d0, d1 in phrases if s1 > s0 and d1 > d0]
    costs = [_num(p.get("cost")) for p in tm.get("phrases", [])]
    costs = [c for c in costs if c is not None]
    src_d, dub_d = _num(rep.get("source_duration_s")), _num(rep.get("dub_duration_s"))
    stretch = dub_d / src_d if src_d and dub_d else None
    if factors:
        phrase_stretch = max(max(f, 1 / f) for f in factors)
    else:  # no matched phrases (uniform map): the whole line is one stretch
        phrase_stretch = max(stretch, 1 / stretch) if stretch else None
    m = rep.get("metrics") or {}
    trk = rep.get("source_tracking") or tracking or {}
    span = rep.get("span_s")
    duration = (span[1] - span[0]) if isinstance(span, list) and len(span) == 2 else dub_d
    m_jitter = _num(m.get("jitter"))
    return LineRecord(
        id=output, line=line, status=status, message=message, lang=rep.get("lang") or lang, source=source, dub=dub,
        dub_text=dub_text, source_text=source_text, keyframes=keyframes,
        duration_s=_num(duration), source_duration_s=src_d, stretch=stretch, phrase_stretch=phrase_stretch,
        align_cost=max(costs) if costs else None, align_method=tm.get("method"), phrases=phrases,
        knots=tuple(tuple(k) for k in tm.get("knots", [])),
        closure=_num(m.get("bilabial_closure_rate")), bilabials=m.get("bilabials"),
        lag_frames=m.get("lip_audio_lag_frames"), jitter=m_jitter if m_jitter is not None else jitter,
        face_found_ratio=_num(trk.get("face_found_ratio")), gaps=trk.get("gaps"), long_gaps=trk.get("long_gaps"),
        warnings=tuple(rep.get("warnings", [])), fps=_num(rep.get("fps")), curves=dict(curves or {}),
        preview=preview, source_video=source_video, dub_audio=dub_audio, updated=updated)


def line_flags(rec: LineRecord, th: Thresholds = Thresholds()) -> list[str]:
    """The names (keys of Thresholds.descriptions) of what a reviewer should check on this line."""
    if rec.status == "failed":
        return ["failed"]
    out = []
    if rec.closure is not None and rec.closure < th.min_closure:
        out.append("bilabials")
    if rec.phrase_stretch is not None and rec.phrase_stretch > th.max_stretch:
        out.append("stretch")
    if rec.align_cost is not None and rec.align_cost > th.max_align_cost:
        out.append("alignment")
    if (rec.long_gaps or 0) > 0 or (rec.face_found_ratio is not None and 1 - rec.face_found_ratio > th.max_untracked):
        out.append("tracking")
    if rec.lag_frames is not None and abs(rec.lag_frames) > th.max_lag_frames:
        out.append("lag")
    if rec.warnings:
        out.append("warning")
    return out


def media_url(path: str | None, page_dir: str | os.PathLike) -> str | None:
    """A URL for `path` relative to the page's folder (so the page and its media can move together)."""
    if not path:
        return None
    try:
        rel = os.path.relpath(path, page_dir)
    except ValueError:  # another drive (Windows): only an absolute URL works
        return Path(path).resolve().as_uri()
    return quote(rel.replace(os.sep, "/"))


def _round(v, n):
    return None if v is None else round(v, n)


def _line_json(rec: LineRecord, th: Thresholds, page_dir) -> dict:
    return {
        "id": rec.id, "line": rec.line, "name": Path(rec.id).stem, "status": rec.status, "msg": rec.message,
        "lang": rec.lang, "source": rec.source, "dub": rec.dub, "dub_text": rec.dub_text or "",
        "source_text": rec.source_text or "", "keyframes": rec.keyframes or "",
        "dur": _round(rec.duration_s, 3), "src_dur": _round(rec.source_duration_s, 3),
        "stretch": _round(rec.stretch, 3), "pstretch": _round(rec.phrase_stretch, 3),
        "cost": _round(rec.align_cost, 3), "method": rec.align_method,
        "phrases": [[round(x, 3) for x in p] for p in rec.phrases],
        "knots": [[round(s, 3), round(d, 3)] for s, d in rec.knots],
        "closure": _round(rec.closure, 3), "bilabials": rec.bilabials, "lag": rec.lag_frames,
        "jitter": _round(rec.jitter, 5), "tracked": _round(rec.face_found_ratio, 4), "gaps": rec.gaps,
        "long_gaps": rec.long_gaps, "warnings": list(rec.warnings), "fps": rec.fps, "curves": rec.curves,
        "flags": line_flags(rec, th), "preview": media_url(rec.preview, page_dir),
        "video": media_url(rec.source_video, page_dir), "audio": media_url(rec.dub_audio, page_dir),
        "updated": _round(rec.updated, 1),
    }


@functools.lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return resources.files("dubtool").joinpath("data", "review", name).read_text(encoding="utf-8")


def build_html(records: list[LineRecord], title: str, batch_key: str, page_dir: str | os.PathLike,
               thresholds: Thresholds = Thresholds(), generated: str = "") -> str:
    """The whole page as text: data as inline JSON, the page's CSS and JS inline, nothing fetched."""
    data = {"version": PAGE_VERSION, "title": title, "key": batch_key, "generated": generated,
            "thresholds": thresholds.descriptions(), "channels": list(DEFAULT_CHANNELS),
            "lines": [_line_json(r, thresholds, page_dir) for r in records]}
    # "<" escaped so no string in the data can close the script element.
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    esc = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        # Offline by construction: nothing may be fetched but the batch's own media files.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; media-src 'self' file: blob:; img-src data:\">\n"
        f"<title>{esc} · dubtool review</title>\n<style>\n{_asset('review.css')}</style>\n</head>\n<body>\n"
        "<div id=\"app\"><noscript>This review page needs JavaScript.</noscript></div>\n"
        f"<script type=\"application/json\" id=\"review-data\">{blob}</script>\n"
        f"<script>\n{_asset('review.js')}</script>\n</body></html>\n")


# --- I/O: reading a batch -----------------------------------------------------------------------

@dataclass
class Batch:
    title: str
    key: str                 # what marks are stored under in the browser (the main manifest's path)
    manifests: list[Path]
    records: list[LineRecord]


def _results_manifest(results_json: Path, data: dict) -> Path | None:
    """The manifest a `<manifest>.results.json` was written for (results sit beside their manifest)."""
    stem = results_json.name[: -len(".results.json")]
    candidates = []
    if data.get("manifest"):
        m = Path(data["manifest"])
        candidates += [m] if m.is_absolute() else [results_json.parent / m.name]
    candidates += [results_json.parent / f"{stem}.csv", results_json.parent / f"{stem}.CSV"]
    return next((c for c in candidates if c.is_file() and c.stem == stem), None)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_batches(path: str | os.PathLike) -> list[tuple[Path, dict | None, float]]:
    """(manifest, results JSON or None, its mtime) for a batch folder (every `*.results.json` in it),
    a results JSON or a manifest CSV. InputError when `path` is none of these."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"batch folder not found: {p}")
    if p.is_file() and p.name.endswith(".results.json"):
        files = [p]
    elif p.is_file() and p.suffix.lower() == ".csv":
        results = p.with_name(p.stem + ".results.json")
        data = _read_json(results) if results.is_file() else None
        return [(p, data, results.stat().st_mtime if data else 0.0)]
    elif p.is_dir():
        files = sorted(p.glob("*.results.json"))
        if not files:
            raise InputError(f"{p} is not a batch folder: it holds no <manifest>.results.json (written beside "
                             "the manifest by `dubtool localize --manifest`); give that folder or the manifest CSV")
    else:
        raise InputError(f"{p}: give a batch folder, its <manifest>.results.json or the manifest CSV")
    out = []
    for f in files:
        data = _read_json(f)
        if data is None or not isinstance(data.get("rows"), list):
            raise InputError(f"{f}: not a batch results file (no rows); rerun `dubtool localize --manifest`")
        manifest = _results_manifest(f, data)
        if manifest is None:
            raise InputError(f"{f}: its manifest {data.get('manifest') or f.name[:-13] + '.csv'} is not beside it; "
                             "keep the results file next to the manifest CSV")
        out.append((manifest, data, f.stat().st_mtime))
    return out


@functools.lru_cache(maxsize=256)
def _perf_meta(path: str) -> dict:
    """meta.json of a .perf (a zip) without loading its arrays; {} when unreadable."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("meta.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def _tracking_from_perf(source: str) -> dict:
    if Path(source).suffix.lower() != ".perf":
        return {}
    meta = _perf_meta(source)
    gaps = meta.get("gaps")
    video = meta.get("source")
    return {"face_found_ratio": meta.get("face_found_ratio"), "gaps": None if gaps is None else len(gaps),
            "long_gaps": meta.get("long_gaps"),
            "video": video if isinstance(video, str) and Path(video).suffix.lower() in VIDEO_SUFFIXES
            and Path(video).is_file() else None}


def read_curves(csv_path: str | os.PathLike, channels=DEFAULT_CHANNELS,
                with_jitter: bool = False) -> tuple[dict, float | None]:
    """The page's curves (encoded) of a Live Link Face CSV and, with `with_jitter` (reports older
    than the jitter figure), its jitter. Read with numpy's C parser, only the columns needed (the
    CSV is dubtool's own; livelink.read_csv checks every cell and is ~10x slower). ({}, None) if unreadable."""
    import io

    from . import metrics
    from .arkit import LIVE_LINK_NAMES, NUM_BLENDSHAPES, NUM_CHANNELS, index

    try:
        text = Path(csv_path).read_text(encoding="utf-8-sig")
        header = [h.strip().lower() for h in text.split("\n", 1)[0].split(",")]
        names = LIVE_LINK_NAMES[:NUM_BLENDSHAPES] if with_jitter else [LIVE_LINK_NAMES[index(c)] for c in channels]
        cols = [header.index(n.lower()) for n in names]
        data = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, usecols=cols, dtype=np.float32, ndmin=2)
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return {}, None
    if with_jitter:
        values = np.zeros((len(data), NUM_CHANNELS), np.float32)
        values[:, :NUM_BLENDSHAPES] = data
        return ({ch: encode_curve(values[:, index(ch)]) for ch in channels}, round(metrics.jitter(values), 6))
    return {ch: encode_curve(data[:, k]) for k, ch in enumerate(channels)}, None


def _preview_for(output: Path, report: dict | None) -> Path | None:
    given = ((report or {}).get("outputs") or {}).get("preview")
    for p in ([Path(given)] if given else []) + [preview_path(output)]:
        if p.is_file():
            return p
    return None


def preview_path(output: str | os.PathLike) -> Path:
    """Where `--previews` renders a line's preview: beside its CSV, `<stem>.preview.mp4`."""
    p = Path(output)
    return p.with_name(p.stem + PREVIEW_SUFFIX)


def load_batch(path: str | os.PathLike) -> Batch:
    """Every line of the batch(es) at `path` with its status, report figures, curves and media."""
    from .batch import read_manifest

    batches = find_batches(path)
    rows: dict[str, tuple] = {}    # output -> (row, result row, results mtime); newest results win
    order: list[str] = []
    sizes = {}
    for manifest, data, mtime in sorted(batches, key=lambda b: b[2]):
        by_line = {r.get("line"): r for r in (data or {}).get("rows", []) if isinstance(r, dict)}
        manifest_rows = read_manifest(manifest)
        sizes[manifest] = (len(manifest_rows), -mtime)
        for row in manifest_rows:
            key = str(Path(row.output).resolve())
            res = by_line.get(row.line)
            if res is not None and Path(str(res.get("output", ""))).name != Path(row.output).name:
                res = None  # the manifest was edited since that run
            if key not in rows:
                order.append(key)
            elif res is None:
                continue
            rows[key] = (row, res, mtime)
    main = max(sizes, key=sizes.get).resolve()  # the biggest (then oldest) manifest names the batch
    records = []
    for key in order:
        row, res, results_mtime = rows[key]
        out = Path(key)
        rp = default_report_path(out)
        failed = res is not None and res.get("status") == "failed"
        # An existing CSV is a finished line (written last), unless a later run of it failed.
        done = out.is_file() and not (failed and results_mtime > out.stat().st_mtime)
        report = _read_json(rp) if done and rp.is_file() else None
        if done:
            status, message = "done", ""
        elif failed:
            status, message = "failed", str(res.get("message") or "failed")
        else:
            status, message = "pending", "not run yet (no output)"
        old_report = (report or {}).get("metrics", {}).get("jitter") is None
        curves, jitter = read_curves(out, with_jitter=old_report) if status == "done" else ({}, None)
        source = str(Path(row.source).resolve())
        video = source if Path(source).suffix.lower() in VIDEO_SUFFIXES and Path(source).is_file() else None
        tracking = {} if status != "done" or (report or {}).get("source_tracking") else _tracking_from_perf(source)
        if video is None:
            v = ((report or {}).get("source_tracking") or {}).get("video") or tracking.get("video")
            video = v if v and Path(v).is_file() else None
        preview = _preview_for(out, report) if status == "done" else None
        dub = Path(row.dub).resolve()
        records.append(record_from_report(
            row.line, key, status, message, row.lang, source, str(dub), row.dub_text,
            row.source_text, row.keyframes, report, curves, jitter, tracking,
            str(preview.resolve()) if preview else None, video, str(dub) if dub.is_file() else None,
            rp.stat().st_mtime if report else None))
    return Batch(main.stem, str(main), [b[0] for b in batches], records)


# --- I/O: previews and the page -----------------------------------------------------------------

def render_previews(batch: Batch, size: int = 320, force: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Render `<stem>.preview.mp4` (the face rig with the dub audio) for done lines that lack one.
    Returns the errors of lines whose preview could not be rendered (the others go on)."""
    from dataclasses import replace

    from .livelink import read_csv
    from .render import RenderOptions, render_video

    todo = [r for r in batch.records if r.status == "done" and (force or r.preview is None)]
    errors = []
    for i, rec in enumerate(todo):
        out = preview_path(rec.id)
        try:
            render_video(read_csv(rec.id), out, audio=rec.dub, options=RenderOptions(width=size, height=size))
            batch.records[batch.records.index(rec)] = replace(rec, preview=str(out.resolve()))
        except DubtoolError as e:
            errors.append(f"line {rec.line} ({Path(rec.id).name}): {e}")
        if progress:
            progress(i + 1, len(todo))
    return errors


def check_page_path(out_html: str | os.PathLike) -> Path:
    """Fail before any work when the page cannot be written (not .html, unwritable folder)."""
    out = Path(out_html)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"the review page must be an .html file, got {out}")
    require_writable(out)
    return out


def write_review(path: str | os.PathLike, out_html: str | os.PathLike, previews: bool = False,
                 thresholds: Thresholds = Thresholds(),
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Read the batch at `path`, optionally render missing previews, write the page atomically.
    Returns a summary (counts per status and flag, the page's size)."""
    out = check_page_path(out_html)
    t0 = time.perf_counter()
    batch = load_batch(path)
    preview_errors = render_previews(batch, progress=progress) if previews else []
    html = build_html(batch.records, batch.title, batch.key, out.resolve().parent, thresholds,
                      time.strftime("%Y-%m-%d %H:%M"))
    write_text_atomic(out, html)
    flags: dict[str, int] = {}
    for r in batch.records:
        for f in line_flags(r, thresholds):
            flags[f] = flags.get(f, 0) + 1
    status = {s: sum(r.status == s for r in batch.records) for s in ("done", "failed", "pending")}
    return {"page": str(out), "lines": len(batch.records), **status, "flags": flags,
            "previews": sum(r.preview is not None for r in batch.records), "preview_errors": preview_errors,
            "bytes": len(html.encode("utf-8")), "seconds": round(time.perf_counter() - t0, 3)}

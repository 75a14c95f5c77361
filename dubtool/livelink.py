"""Live Link Face CSV: the recording format of Epic's Live Link Face app, which Unreal/MetaHuman imports.

Format, as the app records it (public takes checked in docs/conventions.md):

    Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,...,TongueOut,HeadYaw,...,RightEyeRoll
    12:24:24:19.960,61,0.0179804321,...

* `Timecode` is `HH:MM:SS:FF.fff`: a time of day, FF the frame within the second at a **60 fps**
  timecode rate (0..59) whatever the capture rate, `.fff` the sub-frame fraction in thousandths.
  Unreal's importer (LiveLinkFaceImporterFactory) reads FF as 60 fps if any FF exceeds 30, else as
  30 fps; dubtool writes 60 fps timecodes (30 fps for a take shorter than half a second) so any
  take rate imports evenly, and reads any integer timecode rate, choosing the one that spaces the
  frames evenly.
* `BlendShapeCount` is 61 (52 blendshapes + head yaw/pitch/roll + both eyes' yaw/pitch/roll).
* Values are decimals with 10 places, like the app's. Blendshapes are 0..1. Head and eye rotations
  are **radians**; the app's yaw and roll have the opposite sign to dubtool's (positive eye yaw
  turns the eye toward the subject's right), pitch the same (positive = down). This module flips
  yaw and roll at the file boundary, so `Animation` keeps dubtool's convention inside.

Reading is lenient where real recordings vary (CRLF endings, trailing commas, extra columns, which
are ignored with a warning, BlendShapeCount 52 without rotations, `nan` cells in dropped frames,
which are interpolated from the neighbouring frames with a warning) and strict where the data would
be wrong (missing blendshape columns, rows with more or fewer cells than the header, non-numeric
cells, values out of range, timecodes that go backwards): those raise an InputError naming the line.
Reading a take and writing it again gives back the same cells (values, units, column order,
timecodes).
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from .arkit import LIVE_LINK_NAMES, NUM_BLENDSHAPES, NUM_CHANNELS, Animation
from .errors import InputError
from .fileio import atomic_path, require_file


def _app_column_order() -> tuple[str, ...]:
    # The app's recordings list JawRight before JawLeft and MouthRight before MouthLeft (unlike
    # the enum order inside dubtool); files written here follow the app byte for byte.
    names = list(LIVE_LINK_NAMES)
    for a, b in (("JawLeft", "JawRight"), ("MouthLeft", "MouthRight")):
        i, j = names.index(a), names.index(b)
        names[i], names[j] = names[j], names[i]
    return tuple(names)


CSV_COLUMNS = _app_column_order()
HEADER = ("Timecode", "BlendShapeCount") + CSV_COLUMNS
_CSV_TO_CHANNEL = np.array([LIVE_LINK_NAMES.index(n) for n in CSV_COLUMNS])
STANDARD_RATES = (23.976, 24.0, 25.0, 29.97, 30.0, 48.0, 50.0, 59.94, 60.0, 100.0, 120.0)
# File value = sign x dubtool's radians, for HeadYaw, HeadPitch, HeadRoll, LeftEye..., RightEye...
# (yaw and roll flipped: measured on the eyes of public takes, see docs/conventions.md).
ROTATION_FILE_SIGN = np.array([-1, 1, -1] * 3, np.float32)
WRITE_TIMECODE_RATE = 60.0  # the app's timecode rate
UNREAL_60FPS_MIN_FRAME = 30.0  # LiveLinkFaceImporterFactory: any FF above this -> 60 fps, else 30
_TIMECODE_RATES = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 100.0, 120.0)
_MAX_RADIANS = math.pi + 1e-4


def format_timecode(seconds: float, rate: float = WRITE_TIMECODE_RATE) -> str:
    """`HH:MM:SS:FF.fff` for a time of day in seconds at a timecode rate (frames per second)."""
    total = int(round(seconds * 1000.0 * rate))  # in thousandths of a frame
    frames_total, sub = divmod(total, 1000)
    secs_total, ff = divmod(frames_total, int(round(rate)))
    mins_total, ss = divmod(secs_total, 60)
    hh, mm = divmod(mins_total, 60)
    return f"{hh % 24:02d}:{mm:02d}:{ss:02d}:{ff:02d}.{sub:03d}"


def parse_timecode(text: str, rate: float) -> float:
    """Seconds for `HH:MM:SS:FF[.fff]` at a timecode rate (also accepts `;` drop-frame separators)."""
    parts = text.strip().replace(";", ":").split(":")
    if len(parts) != 4:
        raise ValueError(f"bad timecode {text!r}")
    hh, mm, ss = int(parts[0]), int(parts[1]), int(parts[2])
    ff = float(parts[3])
    if not (0 <= mm < 60 and 0 <= ss < 60 and 0 <= ff < rate + 1):
        raise ValueError(f"bad timecode {text!r}")
    return hh * 3600 + mm * 60 + ss + ff / rate


def start_timecode_s(text: str, fps: float) -> float:
    """A start timecode given by a user or a video's `timecode` tag, as seconds of the day.

    `HH:MM:SS:FF` (or `;` before FF for drop-frame) counts FF at the take's nominal rate
    (30 for 29.97), so the CSV's first row shows the same time; `HH:MM:SS[.sss]` is plain seconds.
    """
    t = text.strip().replace(";", ":")
    nominal = max(1, int(round(fps)))
    parts = t.split(":")
    try:
        if len(parts) == 4:
            hh, mm, ss, ff = (int(p) for p in parts)
            if not 0 <= ff < nominal:
                raise ValueError
            secs = ff / nominal
        elif len(parts) == 3:
            hh, mm = int(parts[0]), int(parts[1])
            ss_f = float(parts[2])
            ss, secs = int(ss_f), ss_f - int(ss_f)
        else:
            raise ValueError
        if not (0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 60):
            raise ValueError
    except ValueError:
        raise InputError(f"bad timecode {text!r}: expected HH:MM:SS:FF (FF < {nominal} at {fps:g} fps) "
                         "or HH:MM:SS.sss") from None
    return hh * 3600 + mm * 60 + ss + secs


def _fmt_cells(values: np.ndarray) -> np.ndarray:
    """Cells as the app writes them (10 decimals); a value that 10 decimals would change (tiny
    weights) gets the shortest decimal that reads back to the same float32, so dubtool's own files
    round-trip exactly too."""
    v = np.asarray(values, np.float32) + np.float32(0.0)  # no "-0.0000000000"
    flat = v.ravel()
    cells = np.array([f"{x:.10f}" for x in flat.tolist()], dtype=object)
    back = cells.astype(np.float64).astype(np.float32)
    for i in np.nonzero(back != flat)[0]:
        cells[i] = np.format_float_positional(flat[i], unique=True, trim="0")
    return cells.reshape(v.shape)


def timecodes_for(times_s: np.ndarray, rate: float | None = None) -> list[str]:
    """Timecode cells for frame times of the day: at 60 fps (the app's rate) unless every frame
    number would stay at or under 30, which Unreal would read as a 30 fps timecode; then at 30."""
    if rate:
        return [format_timecode(t, rate) for t in times_s]
    tcs = [format_timecode(t, WRITE_TIMECODE_RATE) for t in times_s]
    if max(float(t.split(":")[3]) for t in tcs) > UNREAL_60FPS_MIN_FRAME:
        return tcs
    return [format_timecode(t, 30.0) for t in times_s]


CSV_BLOCK_ROWS = 256  # rows formatted at a time: a few MB of Python floats and strings, whatever the take


def _rows_text(values: np.ndarray, tcs: list[str]) -> str:
    """CSV rows of (frames, 61) channel values with their timecode cells."""
    v = np.asarray(values)[:, _CSV_TO_CHANNEL].astype(np.float32)
    # Rotations are the last 9 columns in both orders; only blendshape columns are permuted.
    v[:, NUM_BLENDSHAPES:] *= ROTATION_FILE_SIGN
    out = io.StringIO()
    for tc, row in zip(tcs, _fmt_cells(v)):
        out.write(tc + f",{NUM_CHANNELS}," + ",".join(row) + "\n")
    return out.getvalue()


def _csv_blocks(anim: Animation, timecode_rate: float | None = None) -> Iterator[str]:
    """The CSV text of an animation in pieces (header, then blocks of rows)."""
    start = anim.timecode_start_s or 0.0
    kept = anim.meta.get("csv_timecodes")
    if (timecode_rate is None and kept is not None and len(kept) == anim.num_frames
            and anim.meta.get("csv_timecodes_key") == (anim.fps, anim.timecode_start_s)):
        tcs = list(kept)
    else:
        tcs = timecodes_for(start + np.arange(anim.num_frames) / anim.fps, timecode_rate)
    yield ",".join(HEADER) + "\n"
    for r0 in range(0, anim.num_frames, CSV_BLOCK_ROWS):
        yield _rows_text(anim.values[r0:r0 + CSV_BLOCK_ROWS], tcs[r0:r0 + CSV_BLOCK_ROWS])


def timecode_rate_for(start_s: float, fps: float, num_frames: int) -> float:
    """The rate `timecodes_for(times, None)` picks for frames start_s + i / fps, i < num_frames (60, or
    30 when no frame number would pass 30), found block by block without holding the cells."""
    for r0 in range(0, num_frames, 8192):
        times = start_s + np.arange(r0, min(num_frames, r0 + 8192)) / fps
        if max(float(format_timecode(t, WRITE_TIMECODE_RATE).split(":")[3]) for t in times) > UNREAL_60FPS_MIN_FRAME:
            return WRITE_TIMECODE_RATE
    return 30.0


class CsvBlockWriter:
    """A Live Link Face CSV of `num_frames` frames written as its blocks of values come (localize streams
    an hour of dub through it): the same text as write_csv of the whole animation, atomically (nothing
    at `path` unless every frame was written and the block closed without an error)."""

    def __init__(self, path: str | os.PathLike, fps: float, num_frames: int, timecode_start_s: float | None = None,
                 timecode_rate: float | None = None) -> None:
        self.path, self.fps, self.num_frames = Path(path), float(fps), int(num_frames)
        self._start = timecode_start_s or 0.0
        self._rate = timecode_rate or timecode_rate_for(self._start, self.fps, self.num_frames)
        self.rows = 0

    def __enter__(self) -> "CsvBlockWriter":
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._f = open(tmp, "w", encoding="utf-8", newline="\n")
            self._f.write(",".join(HEADER) + "\n")
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def write(self, values: np.ndarray) -> None:
        for r0 in range(0, len(values), CSV_BLOCK_ROWS):
            v = values[r0:r0 + CSV_BLOCK_ROWS]
            times = self._start + np.arange(self.rows, self.rows + len(v)) / self.fps
            self._f.write(_rows_text(v, timecodes_for(times, self._rate)))
            self.rows += len(v)

    def __exit__(self, exc_type, exc, tb):
        try:
            self._f.close()
            if exc_type is None and self.rows != self.num_frames:
                raise ValueError(f"CSV writer got {self.rows} frames, expected {self.num_frames}")
        except BaseException as e:
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        return self._atomic.__exit__(exc_type, exc, tb)


def to_csv_text(anim: Animation, timecode_rate: float | None = None) -> str:
    """The CSV text of an animation. Timecodes start at `anim.timecode_start_s` (0 when unknown);
    a take read from a file keeps its own timecodes while its frames and rate are unchanged."""
    return "".join(_csv_blocks(anim, timecode_rate))


def write_csv(anim: Animation, path: str | os.PathLike, timecode_rate: float | None = None) -> Path:
    """Write a Live Link Face CSV atomically, block by block (bounded memory for long takes)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for block in _csv_blocks(anim, timecode_rate):
                f.write(block)
    return Path(path)


def read_csv(path: str | os.PathLike, fps: float | None = None) -> Animation:
    """Read a Live Link Face CSV (the app's recordings or dubtool's own) into an Animation.

    `fps` overrides the frame rate; otherwise it is measured from the timecodes.
    """
    p = require_file(path, "CSV file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not a text CSV file ({e.reason})") from None
    return parse_csv(text, fps=fps, source=str(p))


def _fill_missing(values: np.ndarray, missing: np.ndarray) -> None:
    """Linear interpolation over frames of each channel's missing cells, held at the ends (in place)."""
    idx = np.arange(len(values))
    for ch in np.nonzero(missing.any(axis=0))[0]:
        ok = ~missing[:, ch]
        values[~ok, ch] = np.interp(idx[~ok], idx[ok], values[ok, ch]) if ok.any() else 0.0


def _timecode_seconds(tcs: list[str], rate: float, source: str) -> np.ndarray:
    secs = np.zeros(len(tcs))
    for r, t in enumerate(tcs):
        try:
            secs[r] = parse_timecode(t, rate)
        except ValueError:
            raise InputError(f"{source}: line {r + 2}: bad timecode {t!r} (expected HH:MM:SS:FF.fff)") from None
    return secs


def _spacing(secs: np.ndarray) -> np.ndarray:
    d = np.diff(secs)
    return np.where(d < -12 * 3600, d + 24 * 3600, d)  # a recording that crosses midnight


def timecode_rate_of(tcs: list[str], source: str = "<csv>") -> float:
    """The timecode rate of a take's Timecode cells: of the integer rates above its largest frame
    number, the one that spaces the frames most evenly (a wrong rate jumps at every second);
    between equally even ones (a take within one second), Unreal's choice (60 if any FF > 30)."""
    try:
        ff = [float(t.strip().replace(";", ":").split(":")[3]) for t in tcs]
    except (IndexError, ValueError):
        ff = [0.0]
    ff_max = max(ff)
    candidates = [r for r in _TIMECODE_RATES if ff_max < r] or [math.floor(ff_max) + 1.0]
    unreal = 60.0 if ff_max > UNREAL_60FPS_MIN_FRAME else 30.0
    if len(tcs) < 2:
        return unreal if unreal in candidates else candidates[0]

    def uneven(rate: float) -> int:
        d = _spacing(_timecode_seconds(tcs, rate, source))
        med = float(np.median(d))
        if med <= 0:
            return len(d) + 1
        return int(np.sum(np.abs(d / med - 1.0) > 0.5))

    return min(candidates, key=lambda r: (uneven(r), r != unreal, r))


def parse_csv(text: str, fps: float | None = None, source: str = "<csv>") -> Animation:
    rows = [(n + 1, r) for n, r in enumerate(csv.reader(io.StringIO(text))) if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{source}: empty CSV")
    header_line, header = rows[0][0], [h.strip() for h in rows[0][1]]
    while header and not header[-1]:
        header.pop()  # trailing comma on the header line
    lower = [h.lower() for h in header]
    if "timecode" not in lower:
        raise InputError(f"{source}: line {header_line}: no 'Timecode' column; not a Live Link Face CSV")
    dup = sorted({h for h in lower if h and lower.count(h) > 1})
    if dup:
        raise InputError(f"{source}: line {header_line}: column(s) named twice: {', '.join(dup[:5])}")
    col_of = {ch: lower.index(name.lower()) for ch, name in enumerate(LIVE_LINK_NAMES) if name.lower() in lower}
    missing_cols = [LIVE_LINK_NAMES[c] for c in range(NUM_BLENDSHAPES) if c not in col_of]
    if missing_cols:
        raise InputError(f"{source}: line {header_line}: missing blendshape column(s): {', '.join(missing_cols[:5])}"
                         + (" ..." if len(missing_cols) > 5 else ""))
    known = {"timecode", "blendshapecount"} | {n.lower() for n in LIVE_LINK_NAMES}
    extra = [h for h in header if h.lower() not in known]
    if extra:
        warnings.warn(f"{source}: ignored column(s) that are not Live Link Face channels: "
                      f"{', '.join(repr(h) for h in extra[:5])}" + (" ..." if len(extra) > 5 else ""))
    tc_col = lower.index("timecode")
    data = rows[1:]
    if not data:
        raise InputError(f"{source}: no data rows")
    values = np.zeros((len(data), NUM_CHANNELS), np.float32)
    missing = np.zeros((len(data), NUM_CHANNELS), bool)
    tcs: list[str] = []
    for r, (line, row) in enumerate(data):
        cells = list(row)
        while len(cells) > len(header) and not cells[-1].strip():
            cells.pop()  # trailing commas
        if len(cells) != len(header):
            raise InputError(f"{source}: line {line}: {len(cells)} cells, the header has {len(header)}")
        tcs.append(cells[tc_col])
        for ch, col in col_of.items():
            cell = cells[col].strip()
            try:
                v = float(cell)
            except ValueError:
                raise InputError(f"{source}: line {line}: column {header[col]}: not a number: {cell!r}") from None
            if math.isnan(v):
                missing[r, ch] = True
                continue
            if math.isinf(v):
                raise InputError(f"{source}: line {line}: column {header[col]}: infinite value")
            if ch < NUM_BLENDSHAPES and not (-0.05 <= v <= 1.05):
                raise InputError(f"{source}: line {line}: column {header[col]}: {v} is outside 0..1")
            if ch >= NUM_BLENDSHAPES and not abs(v) <= _MAX_RADIANS:
                raise InputError(f"{source}: line {line}: column {header[col]}: {v} is outside -pi..pi "
                                 "(rotations are radians)")
            values[r, ch] = v
    if missing.any():
        frames = np.nonzero(missing.any(axis=1))[0]
        all_gone = [LIVE_LINK_NAMES[c] for c in col_of if missing[:, c].all()]
        warnings.warn(f"{source}: {int(missing.sum())} NaN cell(s) on {len(frames)} frame(s) (first on line "
                      f"{data[frames[0]][0]}), filled by linear interpolation between the neighbouring frames "
                      "(held at the ends)" + (f"; no value at all in {', '.join(all_gone[:5])}: set to 0"
                                              if all_gone else ""))
        _fill_missing(values, missing)
    values[:, :NUM_BLENDSHAPES] = np.clip(values[:, :NUM_BLENDSHAPES], 0.0, 1.0)
    values[:, NUM_BLENDSHAPES:] *= ROTATION_FILE_SIGN  # file signs -> dubtool's

    rate = timecode_rate_of(tcs, source)
    secs = _timecode_seconds(tcs, rate, source)
    d = _spacing(secs)
    back = np.nonzero(d <= 0)[0]
    if back.size:
        raise InputError(f"{source}: line {data[back[0] + 1][0]}: timecode does not increase "
                         f"({tcs[back[0]]} -> {tcs[back[0] + 1]})")
    if fps is None:
        fps = rate
        if len(secs) > 1:
            measured = 1.0 / float(np.median(d))
            fps = min(STANDARD_RATES, key=lambda s: abs(s - measured))
            if abs(fps - measured) / measured > 0.03:
                fps = round(measured, 3)
    fps, start = float(fps), float(secs[0])
    meta = {"source": source, "timecode_rate": rate, "csv_timecodes": [t.strip() for t in tcs],
            "csv_timecodes_key": (fps, start)}
    return Animation(values, fps, start, meta)

"""Live Link Face CSV: the recording format of Epic's Live Link Face app, which Unreal/MetaHuman imports.

Format (as recorded by the app and described in Epic's "Recording Face Animation on iOS Device"
/ Live Link Face documentation, channel order = Unreal's `EARFaceBlendShape` enum):

    Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,...,TongueOut,HeadYaw,...,RightEyeRoll
    10:45:40:18.433,61,0.0123,...

* `Timecode` is SMPTE-like `HH:MM:SS:FF.mmm`: FF is the frame within the second at the timecode
  rate, `.mmm` the sub-frame fraction in thousandths.
* `BlendShapeCount` is 61 (52 blendshapes + head yaw/pitch/roll + both eyes' yaw/pitch/roll).
* Values are plain decimals. Blendshapes are 0..1. Head and eye rotations are stored the way
  Epic's ARKit bridge (AppleARKitFaceSupport, `ToBlendShapeMap`) stores them: degrees / 180, i.e.
  -180..180 degrees mapped to -1..1. dubtool keeps radians inside (`Animation`), so this module
  converts at the file boundary: file value = radians / pi. Signs follow dubtool's convention
  (docs/conventions.md); Epic's bridge flips yaw and roll for unmirrored capture, and we have not
  checked our signs against a real recording of a known head turn.

Reading is lenient where real recordings vary (CRLF endings, trailing commas, extra columns,
BlendShapeCount 52 without rotations, `nan` in dropped frames) and strict where the data would be
wrong (missing blendshape columns, non-numeric cells, timecodes that go backwards): those raise an
InputError naming the line.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

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


def format_timecode(seconds: float, rate: float) -> str:
    """`HH:MM:SS:FF.mmm` for a time in seconds at a timecode rate (frames per second)."""
    total_ms = int(round(seconds * 1000.0 * rate))  # in thousandths of a frame
    frames_total, sub = divmod(total_ms, 1000)
    rate_i = int(round(rate))
    secs_total, ff = divmod(frames_total, rate_i)
    mins_total, ss = divmod(secs_total, 60)
    hh, mm = divmod(mins_total, 60)
    return f"{hh % 24:02d}:{mm:02d}:{ss:02d}:{ff:02d}.{sub:03d}"


def parse_timecode(text: str, rate: float) -> float:
    """Seconds for `HH:MM:SS:FF[.mmm]` (also accepts `;` drop-frame separators)."""
    t = text.strip().replace(";", ":")
    parts = t.split(":")
    if len(parts) != 4:
        raise ValueError(f"bad timecode {text!r}")
    hh, mm, ss = int(parts[0]), int(parts[1]), int(parts[2])
    ff = float(parts[3])
    if not (0 <= mm < 60 and 0 <= ss < 60 and ff >= 0):
        raise ValueError(f"bad timecode {text!r}")
    return hh * 3600 + mm * 60 + ss + ff / rate


def _fmt(x: float) -> str:
    # Shortest decimal that reads back to the same float32: exact round trip, compact files.
    return np.format_float_positional(np.float32(x), unique=True, trim="0")


def _fmt_rotation(radians: float) -> str:
    # Rotation channels are written as radians / pi (= degrees / 180). Written with float64
    # precision so that reading back (value * pi, rounded to float32) gives the same float32.
    return repr(float(np.float32(radians)) / math.pi)


def to_csv_text(anim: Animation, timecode_rate: float | None = None) -> str:
    rate = timecode_rate or anim.fps
    start = anim.timecode_start_s or 0.0
    out = io.StringIO()
    out.write(",".join(HEADER) + "\n")
    for i, row in enumerate(anim.values[:, _CSV_TO_CHANNEL]):
        tc = format_timecode(start + i / anim.fps, rate)
        # Rotations are the last 9 columns in both orders; only blendshape columns are permuted.
        cells = [_fmt(v) for v in row[:NUM_BLENDSHAPES]] + [_fmt_rotation(v) for v in row[NUM_BLENDSHAPES:]]
        out.write(tc + f",{NUM_CHANNELS}," + ",".join(cells) + "\n")
    return out.getvalue()


def write_csv(anim: Animation, path: str | os.PathLike, timecode_rate: float | None = None) -> Path:
    """Write a Live Link Face CSV atomically."""
    text = to_csv_text(anim, timecode_rate)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)


def _guess_rate(ff_max: float) -> float:
    # Timecode frame numbers count whole frames per second (29.97 counts 0..29 like 30).
    for r in (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 100.0, 120.0):
        if ff_max < r:
            return r
    return ff_max + 1


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


def parse_csv(text: str, fps: float | None = None, source: str = "<csv>") -> Animation:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{source}: empty CSV")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "timecode" not in lower:
        raise InputError(f"{source}: line 1: no 'Timecode' column; not a Live Link Face CSV")
    col_of = {}
    for ch, name in enumerate(LIVE_LINK_NAMES):
        if name.lower() in lower:
            col_of[ch] = lower.index(name.lower())
    missing = [LIVE_LINK_NAMES[c] for c in range(NUM_BLENDSHAPES) if c not in col_of]
    if missing:
        raise InputError(f"{source}: line 1: missing blendshape column(s): {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    known = {"timecode", "blendshapecount"} | {n.lower() for n in LIVE_LINK_NAMES}
    unknown = [h for h in header if h and h.lower() not in known]
    if unknown:
        raise InputError(f"{source}: line 1: unknown column(s): {', '.join(unknown[:5])}")
    tc_col = lower.index("timecode")
    data = rows[1:]
    if not data:
        raise InputError(f"{source}: no data rows")
    values = np.zeros((len(data), NUM_CHANNELS), np.float32)
    tcs: list[str] = []
    for r, row in enumerate(data):
        line = r + 2
        if len(row) < len(header):
            raise InputError(f"{source}: line {line}: {len(row)} cells, header has {len(header)}")
        tcs.append(row[tc_col])
        for ch, col in col_of.items():
            cell = row[col].strip()
            try:
                v = float(cell)
            except ValueError:
                raise InputError(f"{source}: line {line}: column {header[col]}: not a number: {cell!r}") from None
            if math.isnan(v):
                raise InputError(f"{source}: line {line}: column {header[col]}: NaN value")
            if math.isinf(v):
                raise InputError(f"{source}: line {line}: column {header[col]}: infinite value")
            if ch < NUM_BLENDSHAPES and not (-0.05 <= v <= 1.05):
                raise InputError(f"{source}: line {line}: column {header[col]}: {v} is outside 0..1")
            if ch >= NUM_BLENDSHAPES:
                if not -1.0 <= v <= 1.0:
                    raise InputError(f"{source}: line {line}: column {header[col]}: {v} is outside -1..1 "
                                     "(rotations are degrees/180)")
                v *= math.pi  # degrees/180 -> radians
            values[r, ch] = v
    values[:, :NUM_BLENDSHAPES] = np.clip(values[:, :NUM_BLENDSHAPES], 0.0, 1.0)

    # Timecodes: FF's range tells the timecode rate; frame spacing tells the animation fps.
    try:
        ff_max = max(float(t.strip().replace(";", ":").split(":")[3]) for t in tcs)
    except (IndexError, ValueError):
        ff_max = 0.0
    rate = _guess_rate(ff_max)
    secs = np.zeros(len(tcs))
    for r, t in enumerate(tcs):
        try:
            secs[r] = parse_timecode(t, rate)
        except ValueError:
            raise InputError(f"{source}: line {r + 2}: bad timecode {t!r} (expected HH:MM:SS:FF.mmm)") from None
    if len(secs) > 1:
        d = np.diff(secs)
        d = np.where(d < -12 * 3600, d + 24 * 3600, d)  # recording crossed midnight
        back = np.nonzero(d <= 0)[0]
        if back.size:
            raise InputError(f"{source}: line {int(back[0]) + 3}: timecode does not increase "
                             f"({tcs[back[0]]} -> {tcs[back[0] + 1]})")
    if fps is None:
        fps = rate
        if len(secs) > 1:
            measured = 1.0 / float(np.median(d))
            fps = min(STANDARD_RATES, key=lambda s: abs(s - measured))
            if abs(fps - measured) / measured > 0.03:
                fps = round(measured, 3)
    return Animation(values, float(fps), float(secs[0]), {"source": source, "timecode_rate": rate})

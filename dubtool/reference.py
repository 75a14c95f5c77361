"""Scoring a generated animation against a *real* performance of the same audio (`dubtool eval
--reference`): a Live Link Face capture, or a video/.perf tracked by `dubtool extract`.

Everything here is pure math on arrays except `load_reference` (the I/O edge). Both takes are
resampled to one frame rate (the generated one's) and cut to their common length; frame 0 of both is
taken to be the start of the dub (the lag search absorbs a few frames of offset).

Mouth opening is measured as geometry, not as blendshape weights, so that it does not depend on how
either side's blendshape solver reads a mouth:
  generated   the posed rig's inner-lip gap (vertices 13-14, `metrics.lip_gap`, rig units ~cm)
  reference   a tracked video/.perf: the inner-lip gap between landmarks 13 and 14 of the
              *canonical* landmarks (head pose and scale removed by `extract.canonicalize`'s similarity
              fit, so the gap is in face-size units); a Live Link CSV (no landmarks): the rig's lip gap
              of its weights. The landmarks are what the camera saw; MediaPipe's blendshape scores of a
              small face move the jaw very little (see ../shared/realclips/README.md), the landmarks less so.
Pearson r is scale-free, so the two gaps need no common unit.

Speech frames (for amplitude) come from the dub's RMS envelope: frames within `SPEECH_RANGE_DB` of
the loud end of the take (its 95th percentile) and above `SILENCE_DBFS`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .arkit import LOWER_FACE, NUM_BLENDSHAPES, NUM_CHANNELS, Animation, index
from .errors import InputError

SPEECH_RANGE_DB = 30.0   # speech = frames within this many dB of the take's loud (p95) level
SILENCE_DBFS = -55.0     # ... and louder than this
MIN_AMPLITUDE = 0.02     # a real channel whose p95 during speech is below this has no amplitude to compare
MAX_LAG_FRAMES = 3
MAX_DURATION_MISMATCH_S = 0.5

LOWER_FACE_CHANNELS: tuple[str, ...] = tuple(LOWER_FACE)


@dataclass(frozen=True)
class Reference:
    """A real take: its 61 channels, and (when tracked from video) the tracked inner-lip gap per frame."""

    animation: Animation
    lip_gap: np.ndarray | None = None   # (T,) canonical landmark gap 13-14, or None for a capture CSV
    kind: str = "livelink"              # "livelink" | "perf"

    @property
    def mouth_source(self) -> str:
        return ("tracked landmarks 13-14 (canonical, face-size units)" if self.lip_gap is not None
                else "rig lip gap of the capture's weights")


@dataclass
class ReferenceScore:
    """Figures of one generated take against one real take; NaN where a figure does not apply."""

    fps: float
    frames: int
    speech_frames: int
    mouth_r: float                 # mouth-opening Pearson r at lag 0
    mouth_r_best: float            # ... at the best lag within ±max_lag
    lag_frames: int                # that lag; positive = the generated mouth moves after the real one
    envelope_r: float              # the dub's loudness envelope against the real mouth (baseline), lag 0
    envelope_r_best: float         # ... at its best lag within ±max_lag
    jaw_r: float                   # jawOpen r (channel against channel)
    channel_r: dict[str, float] = field(default_factory=dict)
    amplitude_ratio: dict[str, float] = field(default_factory=dict)   # p95 during speech, generated / real
    std_ratio: dict[str, float] = field(default_factory=dict)         # std during speech, generated / real
    mouth_source: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        def clean(x):
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, float):
                return round(x, 4) if math.isfinite(x) else None
            return x

        return {k: clean(v) for k, v in self.__dict__.items()}


# ------------------------------------------------------------------------------------------ math

def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN when either curve is flat."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 1e-12 else math.nan


def lagged_r(generated: np.ndarray, real: np.ndarray, max_lag: int = MAX_LAG_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """(lags, r): Pearson r of generated[t + lag] against real[t] for lag in -max_lag..max_lag.
    Positive lag = the generated curve follows the real one `lag` frames late."""
    n = min(len(generated), len(real))
    k = int(max(0, min(max_lag, n // 3)))
    lags = np.arange(-k, k + 1)
    r = np.full(len(lags), np.nan)
    for i, lag in enumerate(lags):
        g = generated[max(lag, 0): n + min(lag, 0)]
        e = real[max(-lag, 0): n - max(lag, 0)]
        if len(g) > 2:
            r[i] = pearson(g, e)
    return lags, r


def best_lag(generated: np.ndarray, real: np.ndarray, max_lag: int = MAX_LAG_FRAMES) -> tuple[int, float]:
    """(lag, r) of the best-correlated lag within ±max_lag; ties go to the smallest |lag|; (0, NaN) when flat."""
    lags, r = lagged_r(generated, real, max_lag)
    if not np.isfinite(r).any():
        return 0, math.nan
    best = np.nanmax(r)
    cands = lags[np.isclose(r, best, rtol=0, atol=1e-9)]
    return int(cands[np.argmin(np.abs(cands))]), float(best)


def speech_mask(samples: np.ndarray, sample_rate: int, fps: float, num_frames: int | None = None,
                range_db: float = SPEECH_RANGE_DB, silence_dbfs: float = SILENCE_DBFS) -> np.ndarray:
    """(T,) bool: frames where the audio is speech by energy (within `range_db` of its p95 level and
    above `silence_dbfs`)."""
    from .audio import rms_envelope

    env = rms_envelope(np.asarray(samples, np.float32), int(sample_rate), float(fps)).astype(np.float64)
    db = 20 * np.log10(np.maximum(env, 1e-10))
    loud = float(np.percentile(db, 95)) if db.size else -200.0
    mask = (db > loud - range_db) & (db > silence_dbfs)
    if num_frames is not None:
        mask = mask[:num_frames] if len(mask) >= num_frames else np.pad(mask, (0, num_frames - len(mask)))
    return mask


def resample_curve(curve: np.ndarray, fps: float, new_fps: float, num_frames: int) -> np.ndarray:
    """Linear resampling of a (T,) or (T, C) curve to `num_frames` frames at `new_fps`."""
    curve = np.asarray(curve, np.float64)
    t_old = np.arange(len(curve)) / fps
    t_new = np.arange(num_frames) / new_fps
    if curve.ndim == 1:
        return np.interp(t_new, t_old, curve)
    return np.stack([np.interp(t_new, t_old, curve[:, c]) for c in range(curve.shape[1])], axis=1)


def common_frames(generated: Animation, reference: Reference) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(generated values, reference values, reference gap or None) at the generated take's frame rate,
    cut to their common length; InputError when the takes differ in duration by more than 0.5 s."""
    ref = reference.animation
    if abs(generated.duration_s - ref.duration_s) > MAX_DURATION_MISMATCH_S:
        raise InputError(f"generated take lasts {generated.duration_s:.2f} s but the reference {ref.duration_s:.2f} s; "
                         "score the animation made for the reference's own audio")
    fps = generated.fps
    n = min(generated.num_frames, int(round(ref.duration_s * fps)))
    if n < 3:
        raise InputError("the takes are too short to correlate (under 3 frames)")
    ref_values = resample_curve(ref.values, ref.fps, fps, n)
    gap = None if reference.lip_gap is None else resample_curve(reference.lip_gap, ref.fps, fps, n)
    return np.asarray(generated.values[:n], np.float64), ref_values, gap


def score(generated: Animation, reference: Reference, dub_samples: np.ndarray, sample_rate: int,
          max_lag: int = MAX_LAG_FRAMES, rig=None, channels: tuple[str, ...] = LOWER_FACE_CHANNELS) -> ReferenceScore:
    """Score `generated` against the real take `reference` of the same audio (see the module docstring)."""
    from .audio import rms_envelope

    gen, ref, ref_gap = common_frames(generated, reference)
    fps, n = float(generated.fps), len(gen)
    notes: list[str] = []
    if not metrics.rig_available(rig):
        notes.append("face rig not found: the generated lip gap is a channel-level proxy")
    gen_mouth = metrics.lip_gap(gen, rig)
    real_mouth = ref_gap if ref_gap is not None else metrics.lip_gap(ref, rig)
    lag, r_best = best_lag(gen_mouth, real_mouth, max_lag)
    env = rms_envelope(np.asarray(dub_samples, np.float32), int(sample_rate), fps).astype(np.float64)
    env = env[:n] if len(env) >= n else np.pad(env, (0, n - len(env)))
    _, env_best = best_lag(env, real_mouth, max_lag)
    speech = speech_mask(dub_samples, sample_rate, fps, n)
    if speech.sum() < 3:
        notes.append("the dub has (almost) no speech by energy: amplitudes not measured")
    channel_r, amp, std = {}, {}, {}
    for name in channels:
        c = index(name)
        g, r = gen[:, c], ref[:, c]
        channel_r[name] = pearson(g, r)
        if speech.sum() >= 3:
            real_p95 = float(np.percentile(r[speech], 95))
            amp[name] = float(np.percentile(g[speech], 95)) / real_p95 if real_p95 >= MIN_AMPLITUDE else math.nan
            real_std = float(r[speech].std())
            std[name] = float(g[speech].std()) / real_std if real_std >= metrics.MOVING_STD else math.nan
    if not np.isfinite(pearson(real_mouth, real_mouth)):
        notes.append("the reference mouth does not move: mouth-opening r not measured")
    return ReferenceScore(fps=fps, frames=n, speech_frames=int(speech.sum()), mouth_r=pearson(gen_mouth, real_mouth),
                          mouth_r_best=r_best, lag_frames=lag, envelope_r=pearson(env, real_mouth),
                          envelope_r_best=env_best, jaw_r=channel_r.get("jawOpen", pearson(gen[:, index("jawOpen")],
                                                                                         ref[:, index("jawOpen")])),
                          channel_r=channel_r, amplitude_ratio=amp, std_ratio=std,
                          mouth_source=reference.mouth_source, notes=notes)


def tracked_lip_gap(landmarks_canonical: np.ndarray) -> np.ndarray:
    """(T,) distance between tracked inner-lip landmarks 13 and 14 in canonical (face-size) units."""
    lm = np.asarray(landmarks_canonical, np.float64)
    return np.linalg.norm(lm[:, metrics.INNER_UPPER_LIP] - lm[:, metrics.INNER_LOWER_LIP], axis=1)


def speech_std(values61: np.ndarray, mask: np.ndarray, channels: tuple[str, ...] = LOWER_FACE_CHANNELS) -> dict[str, float]:
    """Standard deviation of each channel over the speech frames `mask`."""
    v = np.asarray(values61, np.float64)
    if v.ndim != 2 or v.shape[1] != NUM_CHANNELS or len(mask) != len(v):
        raise InputError(f"values must be frames x {NUM_CHANNELS} with one mask entry per frame")
    return {name: float(v[mask, index(name)].std()) if mask.any() else math.nan for name in channels
            if index(name) < NUM_BLENDSHAPES}


def parse_stats_markdown(text: str) -> dict[str, tuple[float, float]]:
    """{channel: (mean, std)} from a markdown table with `channel | mean | std` columns
    (../shared/reference/arkit_speech_stats.md). InputError when no such table is found."""
    out: dict[str, tuple[float, float]] = {}
    cols = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 3:
            continue
        lower = [c.lower() for c in cells]
        if "channel" in lower and "std" in lower:
            cols = (lower.index("channel"), lower.index("mean") if "mean" in lower else None, lower.index("std"))
            continue
        if cols is None or set(cells[0]) <= set(":- "):
            continue
        try:
            mean = float(cells[cols[1]]) if cols[1] is not None else math.nan
            out[cells[cols[0]]] = (mean, float(cells[cols[2]]))
        except (ValueError, IndexError):
            continue
    if not out:
        raise InputError("no 'channel | mean | std' table found in the statistics file")
    return out


# ------------------------------------------------------------------------------------------- I/O

def load_reference(path: str | os.PathLike) -> Reference:
    """A real take from a Live Link Face CSV, a `.perf` (dubtool extract) or a video (extracted now)."""
    from .fileio import require_file
    from .localize import VIDEO_SUFFIXES

    p = require_file(path, "reference")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        from .livelink import read_csv

        return Reference(read_csv(p), None, "livelink")
    if suffix == ".perf" or suffix in VIDEO_SUFFIXES:
        if suffix == ".perf":
            from .performance import load_performance

            perf = load_performance(p)
        else:
            from .extract import extract

            perf = extract(p)
        return reference_from_performance(perf)
    raise InputError(f"{p}: reference must be a Live Link Face CSV, a .perf file or a video "
                     f"({', '.join(sorted(VIDEO_SUFFIXES))})")


def reference_from_performance(perf) -> Reference:
    return Reference(perf.animation, tracked_lip_gap(perf.landmarks_canonical), "perf")


"""Quality metrics for generated facial animation: pure functions on (T, 61) channel arrays.

Lip metrics follow the speech-driven animation literature (VOCA/FaceFormer/CodeTalker): LVE is the
per-frame maximum L2 error over lip vertices of the posed mesh, averaged over frames; FDD is the
upper-face dynamics deviation (per upper-face vertex, the standard deviation over time of its
displacement norm, compared between prediction and reference). Dubbing-specific metrics check what a
viewer notices: do the lips close on /p b m/, does the jaw open on open vowels, do lips lead or lag
the audio, and does the source language leak into the new mouth motion.

Vertex-level metrics pose the face rig (`dubtool.rig.load_rig()`: `.neutral (468,3)`,
`.deltas (52,468,3)`, `.pose(weights)`); distances are in the rig's units (the canonical face mesh,
~cm). When no rig is available the lip gap and FDD fall back to a channel-level proxy (documented on
each function) and say so through `rig_available()`; LVE needs the rig.

Phonemes are anything with `.symbol`, `.start_s`, `.end_s` (dubtool.phonemes.Phoneme) or
(symbol, start_s, end_s) tuples.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .arkit import EYE_ROT_IDX, HEAD_IDX, LOWER_IDX, NUM_BLENDSHAPES, NUM_CHANNELS, UPPER_IDX, index
from .errors import InputError, ModelError

# MediaPipe face-mesh lip vertices (outer and inner contours of both lips).
LIP_VERTICES: tuple[int, ...] = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178,
                                 181, 185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324,
                                 375, 402, 405, 409, 415)
INNER_UPPER_LIP = 13
INNER_LOWER_LIP = 14

JAW_OPEN = index("jawOpen")
MOUTH_CLOSE = index("mouthClose")
_LIP_OPENERS = tuple(index(n) for n in ("mouthLowerDownLeft", "mouthLowerDownRight",
                                        "mouthUpperUpLeft", "mouthUpperUpRight"))
_LIP_SEALERS = tuple(index(n) for n in ("mouthPressLeft", "mouthPressRight", "mouthRollLower", "mouthRollUpper"))
# Channels that carry the actor's upper-face performance: upper blendshapes, head and eye rotations.
PERFORMANCE_IDX = np.concatenate([UPPER_IDX, HEAD_IDX, EYE_ROT_IDX])

# jawOpen weight of the reference "typical open mouth" that closure thresholds are relative to.
TYPICAL_OPEN_JAW = 0.5
# Normalized lip gap below which a /p b m/ counts as closed. On the shipped rig (rest gap 0.2 mm,
# jawOpen 0.5 gap 16.5 mm since the rig was fitted to real faces) 0.09 is an inner-lip gap under
# 1.7 mm, the same mm figure as 0.2 on the earlier procedural rig (0.2 / 7.6 mm).
CLOSURE_THRESHOLD = 0.09
# A channel "moves" when its standard deviation over the clip exceeds this (weights 0..1 / radians).
MOVING_STD = 1e-3


# ----------------------------------------------------------------------------------------- helpers

def _values(values61, what: str = "animation") -> np.ndarray:
    """(T, 61) float64 array from an array or an `Animation`."""
    v = getattr(values61, "values", values61)
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != NUM_CHANNELS:
        raise InputError(f"{what} must be frames x {NUM_CHANNELS} channel values, got shape {v.shape}")
    if v.shape[0] == 0:
        raise InputError(f"{what} has no frames")
    return v


def _paired(pred61, ref61, max_mismatch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both animations cut to their common length; a clear error when they differ by more than a
    rounding difference (a few frames), which means they are not of the same line."""
    a, b = _values(pred61, "prediction"), _values(ref61, "reference")
    n = min(len(a), len(b))
    if abs(len(a) - len(b)) > max(max_mismatch, int(0.02 * n)):
        raise InputError(f"animations differ in length ({len(a)} vs {len(b)} frames); time-warp the reference "
                         "to the prediction first")
    return a[:n], b[:n]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


@functools.lru_cache(maxsize=1)
def _default_rig():
    try:
        from .rig import load_rig
    except ImportError:
        return None
    try:
        return load_rig()
    except Exception:  # a missing/corrupt rig bundle: metrics fall back to channel proxies
        return None


def default_rig():
    """The face rig (`dubtool.rig.load_rig()`), or None when it is not installed."""
    return _default_rig()


def rig_available(rig=None) -> bool:
    return (rig if rig is not None else default_rig()) is not None


def _resolve(rig):
    return rig if rig is not None else default_rig()


def pose_vertices(rig, values61, vertices: Sequence[int] | None = None) -> np.ndarray:
    """(T, V, 3) posed rig vertices for the 52 blendshape weights of `values61` (head and eye rotations
    are left out: metrics compare faces in head-pose-free canonical space)."""
    v = _values(values61)
    w = np.clip(v[:, :NUM_BLENDSHAPES], 0.0, 1.0)
    deltas = getattr(rig, "deltas", None)
    neutral = getattr(rig, "neutral", None)
    if deltas is not None and neutral is not None:
        idx = np.arange(np.asarray(neutral).shape[0]) if vertices is None else np.asarray(vertices)
        d = np.asarray(deltas, dtype=np.float64)[:, idx, :].reshape(NUM_BLENDSHAPES, -1)
        return np.asarray(neutral, dtype=np.float64)[idx][None] + (w @ d).reshape(len(w), len(idx), 3)
    posed = np.asarray(rig.pose(w), dtype=np.float64)
    return posed if vertices is None else posed[:, np.asarray(vertices), :]


def _phoneme_spans(phonemes: Iterable) -> list[tuple[str, float, float]]:
    out = []
    for p in phonemes:
        if isinstance(p, (tuple, list)):
            sym, a, b = p[0], p[1], p[2]
        elif isinstance(p, dict):
            sym, a, b = p["symbol"], p["start_s"], p["end_s"]
        else:
            sym, a, b = p.symbol, p.start_s, p.end_s
        out.append((str(sym), float(a), float(b)))
    return out


def _base_symbol(symbol: str) -> str:
    """Phoneme symbol without stress, length, diacritics or ARPAbet stress digits, lower-case."""
    s = unicodedata.normalize("NFD", symbol)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return s.strip().strip("ˈˌːˑ'\"%,0123456789").replace("ʰ", "").replace("ʲ", "").replace("ʷ", "").lower()


# ARPAbet (CMUdict / pocketsphinx) symbols, upper case with optional stress digit.
_ARPABET_BILABIAL = {"P", "B", "M"}
_ARPABET_OPEN = {"AA", "AE", "AW", "AY"}
_IPA_BILABIAL = set("pbmɸβʙ")
_IPA_OPEN = set("aɑæɐɒɶ")


def _arpabet(symbol: str) -> str | None:
    s = symbol.strip().rstrip("012")
    return s if s and s.isascii() and s.isalpha() and s.isupper() else None


def _is_bilabial(symbol: str) -> bool:
    """/p b m/ (and ɸ β) in IPA (dubtool.phonemes rules) or ARPAbet."""
    arpa = _arpabet(symbol)
    if arpa is not None:
        return arpa in _ARPABET_BILABIAL
    try:
        from .phonemes import is_bilabial
    except ImportError:
        base = _base_symbol(symbol)
        return bool(base) and base[0] in _IPA_BILABIAL
    return bool(is_bilabial(symbol))


def _is_open_vowel(symbol: str) -> bool:
    """Open vowels /a ɑ æ ɐ ɒ/ (diphthongs by their onset) in IPA or ARPAbet (AA AE AW AY)."""
    arpa = _arpabet(symbol)
    if arpa is not None:
        return arpa in _ARPABET_OPEN
    try:
        from .phonemes import is_open_vowel
    except ImportError:
        base = _base_symbol(symbol)
        return bool(base) and base[0] in _IPA_OPEN
    return bool(is_open_vowel(symbol))


def _span_frames(start_s: float, end_s: float, fps: float, num_frames: int, tol_s: float = 0.0) -> slice:
    # Frames whose time i / fps lies in [start - tol, end + tol); the epsilon absorbs float rounding.
    a = max(0, int(np.ceil((start_s - tol_s) * fps - 1e-6)))
    b = min(num_frames, int(np.ceil((end_s + tol_s) * fps - 1e-6)))
    return slice(a, max(a, b))


# ------------------------------------------------------------------------------------------- lips

def lip_vertex_error(pred61, ref61, rig=None) -> float:
    """LVE: per frame, the maximum L2 distance over the lip vertices between the two posed meshes,
    averaged over frames (VOCA / FaceFormer). In the rig's units."""
    rig = _resolve(rig)
    if rig is None:
        raise ModelError("lip vertex error needs the face rig (dubtool.rig); install the model bundle with "
                         "`dubtool setup-models`")
    a, b = _paired(pred61, ref61)
    pa = pose_vertices(rig, a, LIP_VERTICES)
    pb = pose_vertices(rig, b, LIP_VERTICES)
    return float(np.linalg.norm(pa - pb, axis=2).max(axis=1).mean())


def channel_lip_gap(v: np.ndarray) -> np.ndarray:
    # Channel-level stand-in for the inner-lip distance, in "jawOpen units": the jaw opens the lips,
    # mouthClose closes them against an open jaw (ARKit's definition), lip raisers/lowerers part them,
    # press/roll seal them.
    w = np.clip(v[:, :NUM_BLENDSHAPES], 0.0, 1.0)
    gap = (w[:, JAW_OPEN] - w[:, MOUTH_CLOSE] + 0.25 * w[:, list(_LIP_OPENERS)].sum(axis=1)
           - 0.1 * w[:, list(_LIP_SEALERS)].sum(axis=1))
    return np.maximum(gap, 0.0)


def lip_gap(values61, rig=None) -> np.ndarray:
    """(T,) distance between the inner upper lip (vertex 13) and inner lower lip (14) of the posed rig,
    0 where the lips cross (the upper one below the lower one, e.g. mouthClose beyond jawOpen, or a lip
    rolled in behind the other): crossed lips are sealed, not open.

    Without a rig: a channel-level proxy (jawOpen − mouthClose + lip raisers/lowerers − press/roll,
    floored at 0) in jawOpen units."""
    v = _values(values61)
    rig = _resolve(rig)
    if rig is None:
        return channel_lip_gap(v)
    p = pose_vertices(rig, v, (INNER_UPPER_LIP, INNER_LOWER_LIP))
    crossed = p[:, 0, 1] < p[:, 1, 1]  # canonical +y is up
    return np.where(crossed, 0.0, np.linalg.norm(p[:, 0] - p[:, 1], axis=1))


def lip_gap_reference(rig=None) -> tuple[float, float]:
    """(neutral gap, typical open gap): the lip gap at rest and at jawOpen = 0.5, the scale closure
    thresholds are measured on."""
    v = np.zeros((2, NUM_CHANNELS))
    v[1, JAW_OPEN] = TYPICAL_OPEN_JAW
    g = lip_gap(v, rig)
    return float(g[0]), float(g[1])


def normalized_lip_gap(values61, rig=None) -> np.ndarray:
    """Lip gap rescaled so that the neutral face is 0 and a typical open mouth (jawOpen 0.5) is 1."""
    rig = _resolve(rig)
    neutral, open_ = lip_gap_reference(rig)
    return (lip_gap(values61, rig) - neutral) / max(open_ - neutral, 1e-9)


@dataclass(frozen=True)
class ClosureCheck:
    """One bilabial phoneme: the smallest normalized lip gap in its span and whether that is a closure."""

    symbol: str
    start_s: float
    end_s: float
    min_gap: float
    closed: bool


def bilabial_closures(values61, phonemes, fps: float, rig=None, threshold: float = CLOSURE_THRESHOLD,
                      tolerance_s: float = 0.04) -> list[ClosureCheck]:
    """Check every /p b m/ phoneme: the lips count as closed when the minimum normalized lip gap within
    the phoneme span (± `tolerance_s`, since closure may slightly lead the acoustic onset) is below
    `threshold` (0 = the rig's rest face, whose lips touch, 1 = a typical open mouth). On the shipped
    rig (rest gap 0.2 mm, jawOpen 0.5 gap 16.5 mm) the default CLOSURE_THRESHOLD 0.09 means an inner-lip
    gap under 1.7 mm."""
    v = _values(values61)
    return closures_from_gap(normalized_lip_gap(v, rig), phonemes, fps, threshold, tolerance_s)


def closures_from_gap(gap: np.ndarray, phonemes, fps: float, threshold: float = CLOSURE_THRESHOLD,
                      tolerance_s: float = 0.04) -> list[ClosureCheck]:
    """bilabial_closures on a normalized lip-gap curve (T,) (normalized_lip_gap of the animation)."""
    out = []
    for sym, a, b in _phoneme_spans(phonemes):
        if not _is_bilabial(sym):
            continue
        sl = _span_frames(a, b, fps, len(gap), tolerance_s)
        if sl.stop <= sl.start:  # phoneme outside the animation: counts as not closed
            out.append(ClosureCheck(sym, a, b, float("inf"), False))
            continue
        m = float(gap[sl].min())
        out.append(ClosureCheck(sym, a, b, m, m < threshold))
    return out


def bilabial_closure_rate(values61, phonemes, fps: float, rig=None, threshold: float = CLOSURE_THRESHOLD,
                          tolerance_s: float = 0.04) -> float:
    """Fraction of /p b m/ phonemes during which the lips close (see `bilabial_closures`); NaN when the
    line has no bilabial."""
    checks = bilabial_closures(values61, phonemes, fps, rig, threshold, tolerance_s)
    return float(np.mean([c.closed for c in checks])) if checks else float("nan")


def open_vowel_false_closures(values61, phonemes, fps: float, rig=None, threshold: float = 0.2,
                              away_from_bilabials_s: float = 0.0) -> tuple[int, int]:
    """(closed, total): frames inside open-vowel spans (/a ɑ æ ɐ ɒ/, no tolerance) whose normalized lip
    gap is below the closure `threshold` — lips shut where the sound is an open vowel. With
    `away_from_bilabials_s` > 0, frames within that time of a /p b m/ span are left out (there real lips
    are closing ahead of the sound or still opening after it)."""
    v = _values(values61)
    mask = np.zeros(len(v), bool)
    spans = _phoneme_spans(phonemes)
    for sym, a, b in spans:
        if _is_open_vowel(sym):
            mask[_span_frames(a, b, fps, len(v))] = True
    if away_from_bilabials_s > 0:
        for sym, a, b in spans:
            if _is_bilabial(sym):
                mask[_span_frames(a, b, fps, len(v), away_from_bilabials_s)] = False
    if not mask.any():
        return 0, 0
    gap = normalized_lip_gap(v, rig)
    return int((gap[mask] < threshold).sum()), int(mask.sum())


@dataclass(frozen=True)
class JawContrast:
    """Mean jawOpen during open vowels, during all other frames, and the difference (higher = clearer)."""

    open_vowel_mean: float
    other_mean: float

    @property
    def contrast(self) -> float:
        return self.open_vowel_mean - self.other_mean


def open_vowel_jaw(values61, phonemes, fps: float) -> JawContrast:
    """Mean jawOpen on open vowels (/a ɑ æ ɐ ɒ/, ARPAbet AA AE AW AY) vs the rest of the clip.
    Fields are NaN when the line has no open vowel (or nothing else)."""
    v = _values(values61)
    mask = np.zeros(len(v), bool)
    for sym, a, b in _phoneme_spans(phonemes):
        if _is_open_vowel(sym):
            mask[_span_frames(a, b, fps, len(v))] = True
    jaw = v[:, JAW_OPEN]
    on = float(jaw[mask].mean()) if mask.any() else float("nan")
    off = float(jaw[~mask].mean()) if (~mask).any() else float("nan")
    return JawContrast(on, off)


def mouth_opening(values61, rig=None) -> np.ndarray:
    """(T,) mouth-opening curve: jawOpen plus the normalized lip gap (both ~0 closed, ~0.5-1 open)."""
    v = _values(values61)
    return np.clip(v[:, JAW_OPEN], 0, 1) + normalized_lip_gap(v, rig)


def lip_audio_xcorr(values61, samples: np.ndarray, sample_rate: int, fps: float, max_lag_frames: int = 10,
                    rig=None) -> tuple[np.ndarray, np.ndarray]:
    """(lags, correlation): Pearson correlation of mouth opening shifted by each lag against the speech
    RMS envelope. Positive lag = the mouth moves that many frames after the sound."""
    from .audio import rms_envelope, samples_array

    mouth = mouth_opening(values61, rig)
    env = rms_envelope(samples_array(samples), int(sample_rate), float(fps)).astype(np.float64)
    return lags_and_correlation(mouth, env, max_lag_frames)


def lags_and_correlation(mouth: np.ndarray, env: np.ndarray, max_lag_frames: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """lip_audio_xcorr on a mouth-opening curve and an RMS envelope at the same frame rate."""
    n = min(len(mouth), len(env))
    mouth, env = mouth[:n], env[:n]
    k = int(max(0, min(max_lag_frames, n // 3)))
    lags = np.arange(-k, k + 1)
    corr = np.empty(len(lags))
    for i, lag in enumerate(lags):
        # mouth[t + lag] against env[t]
        m = mouth[max(lag, 0): n + min(lag, 0)]
        e = env[max(-lag, 0): n - max(lag, 0)]
        corr[i] = _pearson(m, e) if len(m) > 2 else np.nan
    return lags, corr


def lip_audio_lag(values61, samples: np.ndarray, sample_rate: int, fps: float, max_lag_frames: int = 10,
                  rig=None) -> int:
    """Lag (frames) that best aligns mouth opening with the speech RMS envelope; positive = lips late.
    Raises InputError when either curve is flat (nothing to align)."""
    return best_lag(*lip_audio_xcorr(values61, samples, sample_rate, fps, max_lag_frames, rig))


def best_lag(lags: np.ndarray, corr: np.ndarray) -> int:
    """The lag of the highest correlation (lip_audio_lag's choice); InputError when none is finite."""
    if not np.isfinite(corr).any():
        raise InputError("cannot measure lip-audio lag: the mouth or the audio does not move")
    best = np.nanmax(corr)
    # Ties (flat peaks) resolve to the smallest absolute lag.
    cands = lags[np.isclose(corr, best, rtol=0, atol=1e-9)]
    return int(cands[np.argmin(np.abs(cands))])


# -------------------------------------------------------------------------------------- upper face

def fdd(pred61, ref61, fps: float, rig=None) -> float:
    """Upper-face dynamics deviation (FaceFormer/CodeTalker): for each upper-face vertex (brows, eyelids,
    glabella: `keypoints.UPPER_FACE_VERTICES`), the standard deviation over time of its displacement
    norm from the neutral face; the absolute difference between prediction and reference, averaged over
    vertices. 0 = the same amount of upper-face motion. In rig units; without a rig the same on the
    upper-face blendshape channels (weight units). `fps` only documents that both run at one rate."""
    from .keypoints import UPPER_FACE_VERTICES

    del fps
    a, b = _paired(pred61, ref61)
    rig = _resolve(rig)
    if rig is None:
        sa, sb = a[:, UPPER_IDX].std(axis=0), b[:, UPPER_IDX].std(axis=0)
        return float(np.abs(sa - sb).mean())
    zero = np.zeros((1, NUM_CHANNELS))
    base = pose_vertices(rig, zero, UPPER_FACE_VERTICES)
    da = np.linalg.norm(pose_vertices(rig, a, UPPER_FACE_VERTICES) - base, axis=2)
    db = np.linalg.norm(pose_vertices(rig, b, UPPER_FACE_VERTICES) - base, axis=2)
    return float(np.abs(da.std(axis=0) - db.std(axis=0)).mean())


def upper_face_correlation(pred61, ref61) -> float:
    """Mean Pearson correlation over the performance channels (upper-face blendshapes, head and eye
    rotations) that move in the reference; 1 = the actor's upper-face timing is kept. NaN if none move."""
    a, b = _paired(pred61, ref61)
    rs = []
    for c in PERFORMANCE_IDX:
        if b[:, c].std() > MOVING_STD:
            r = _pearson(a[:, c], b[:, c])
            rs.append(0.0 if np.isnan(r) else r)  # a flat prediction of a moving channel kept nothing
    return float(np.mean(rs)) if rs else float("nan")


# ------------------------------------------------------------------------------------ smoothness

def jitter(values61, channels: Sequence[int] | None = None) -> float:
    """Mean absolute second difference (weight per frame²) over the blendshape channels (or `channels`);
    0 for any linear ramp, large for frame-to-frame flicker."""
    v = _values(values61)
    idx = np.arange(NUM_BLENDSHAPES) if channels is None else np.asarray(channels)
    if len(v) < 3:
        return 0.0
    return float(np.abs(np.diff(v[:, idx], n=2, axis=0)).mean())


# ----------------------------------------------------------------------------- disentanglement

def disentanglement_leak(pred61, source61, rig=None) -> float:
    """Pearson correlation between the generated mouth-opening curve and the SOURCE line's (time-warped
    to the dub). The new language's lips should not follow the old language's: ~0 is good; values near
    the naive copy baseline's (which is 1 by construction) mean the source mouth leaked through."""
    a, b = _paired(pred61, source61)
    r = _pearson(mouth_opening(a, rig), mouth_opening(b, rig))
    return r


@dataclass(frozen=True)
class SwapChange:
    """Mean absolute change of lower-face channels and of performance (upper-face + head/eye) channels
    between two generator outputs."""

    lower: float
    upper: float

    @property
    def ratio(self) -> float:
        """lower / upper change (large when the swap should only move the mouth)."""
        return self.lower / max(self.upper, 1e-9)


def swap_sensitivity(out_a, out_b) -> SwapChange:
    """How much lower vs upper channels change between two outputs of the generator, for the swap test:
    swapping the audio should change `lower` a lot and `upper` little; swapping the keypoints the reverse."""
    a, b = _paired(out_a, out_b)
    d = np.abs(a - b)
    return SwapChange(float(d[:, LOWER_IDX].mean()), float(d[:, PERFORMANCE_IDX].mean()))

"""Phonemes -> lower-face ARKit animation: viseme targets blended by Cohen–Massaro dominance functions.

This is the "teacher" that labels the training corpus (espeak phones -> lip/jaw curves) and the
transcript-based fallback when no model is available. Each phone has a target pose (a weight vector
over the lower-face channels) and, per channel group (jaw / lips), a dominance
D(t) = alpha * exp(-|t - centre| / width); the pose at time t is the dominance-weighted mean of the
targets (Cohen & Massaro 1993, "Modeling coarticulation in synthetic visual speech"). Dominance makes
coarticulation fall out naturally: /u/ rounds the lips of the consonants around it, /t/ takes its lip
shape from its neighbours, and bilabials, whose lip dominance is high, reach closure even in fast
speech. A final pass guarantees the closure: the lips are sealed on every frame of each /p b m/
(ARKit: mouthClose == jawOpen means lips together against the open jaw).

The lips lead the audio by `lead_s` (~40-60 ms, as in real speech and animation practice).
Only lower-face channels (jaw*, mouth*, cheekPuff, tongueOut) are non-zero in the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arkit import LOWER_IDX, NUM_CHANNELS, Animation, index
from .errors import InputError
from .phonemes import Phoneme, is_bilabial, normalize, viseme_class


@dataclass(frozen=True)
class TeacherStyle:
    """Per-speaker articulation style; `TeacherStyle()` is the neutral default, `sample_style(rng)`
    draws one for the training corpus."""

    articulation: float = 1.0   # overall mouth movement scale
    jaw: float = 1.0            # jaw opening emphasis
    lips: float = 1.0           # lip shaping (rounding, spreading) emphasis
    width: float = 1.0          # coarticulation width (larger = smoother, more overlap)
    lead_s: float = 0.05        # lips ahead of the audio
    asymmetry: float = 0.0      # > 0: right side of the mouth moves more (weights x (1 +/- a))


def sample_style(rng: np.random.Generator) -> TeacherStyle:
    return TeacherStyle(articulation=float(rng.uniform(0.75, 1.25)), jaw=float(rng.uniform(0.8, 1.25)),
                        lips=float(rng.uniform(0.8, 1.25)), width=float(rng.uniform(0.8, 1.3)),
                        lead_s=float(rng.uniform(0.03, 0.07)), asymmetry=float(rng.normal(0.0, 0.05)))


def _pose(**weights: float) -> dict[str, float]:
    """Expand 'mouthStretch=0.3' into both sides; other names as given."""
    out = {}
    for name, w in weights.items():
        if name in ("mouthStretch", "mouthSmile", "mouthFrown", "mouthPress", "mouthLowerDown", "mouthUpperUp",
                    "mouthDimple"):
            out[name + "Left"] = out[name + "Right"] = w
        else:
            out[name] = w
    return out


# Viseme targets (ARKit weights), the textbook shapes: open vowels drop the jaw, rounded vowels
# pucker/funnel, bilabials seal the lips (jawOpen == mouthClose), labiodentals tuck the lower lip.
# `REAL_SPEECH_GAIN` below then scales each channel so the teacher moves it as much as real speakers do.
TARGETS: dict[str, dict[str, float]] = {
    "silence": {},
    "bilabial": _pose(jawOpen=0.15, mouthClose=0.15, mouthPress=0.35, mouthRollLower=0.15, mouthRollUpper=0.08,
                      mouthShrugUpper=0.15, mouthShrugLower=0.1, cheekPuff=0.04),
    "labiodental": _pose(jawOpen=0.08, mouthClose=0.02, mouthRollLower=0.45, mouthUpperUp=0.15,
                         mouthShrugLower=0.1, mouthShrugUpper=0.1, jawForward=0.1),
    "dental": _pose(jawOpen=0.15, mouthLowerDown=0.1, tongueOut=0.12),
    "alveolar": _pose(jawOpen=0.12, mouthStretch=0.08, mouthLowerDown=0.05, jawForward=0.08),
    "postalveolar": _pose(jawOpen=0.10, mouthFunnel=0.35, mouthPucker=0.08, mouthUpperUp=0.12, mouthLowerDown=0.12,
                          mouthShrugUpper=0.1, jawForward=0.15),
    "velar": _pose(jawOpen=0.18, mouthStretch=0.05),
    "glottal": _pose(jawOpen=0.2),
    "palatal": _pose(jawOpen=0.1, mouthStretch=0.15, mouthSmile=0.1, mouthDimple=0.1),
    "rounded_glide": _pose(jawOpen=0.08, mouthPucker=0.5, mouthFunnel=0.25, jawForward=0.05),
    "open_vowel": _pose(jawOpen=0.55, mouthLowerDown=0.25, mouthUpperUp=0.1, mouthStretch=0.05),
    "mid_vowel": _pose(jawOpen=0.3, mouthLowerDown=0.12),
    "spread_vowel": _pose(jawOpen=0.15, mouthStretch=0.35, mouthSmile=0.2, mouthLowerDown=0.1, mouthUpperUp=0.08,
                          mouthDimple=0.15),
    "rounded_vowel": _pose(jawOpen=0.22, mouthPucker=0.3, mouthFunnel=0.4),
    "nasal_vowel": _pose(jawOpen=0.25, mouthFunnel=0.25, mouthPucker=0.05),
}
# Close rounded vowels (u y ʊ ʏ) pucker more with less jaw; open-mid rounded (ɔ œ ɒ) open the jaw more.
_CLOSE_ROUNDED = _pose(jawOpen=0.12, mouthPucker=0.8, mouthFunnel=0.3)
_OPEN_ROUNDED = _pose(jawOpen=0.32, mouthPucker=0.15, mouthFunnel=0.5)

# Per-channel gain that calibrates the targets to real speech: the teacher's standard deviation of
# each channel over 119 real prompts (asterisk en/fr/es training prompts, pocketsphinx-aligned, neutral
# style) set against the std of real iPhone ARKit speech (BEAT, DiffSHEG's normaliser; see
# docs/teacher.md). Measured by `scripts/calibrate_teacher.py`, which prints the ratios before and
# after. Uncalibrated, the teacher pressed (3.0x) and puckered (3.3x) far too much and barely moved
# mouthLowerDown (0.40x), mouthUpperUp (0.29x) and mouthClose (0.30x).
REAL_SPEECH_GAIN: dict[str, float] = {
    "jawOpen": 0.85, "mouthClose": 1.6, "mouthFunnel": 1.35, "mouthPucker": 0.5, "mouthStretchLeft": 0.87,
    "mouthStretchRight": 0.87, "mouthRollLower": 0.62, "mouthRollUpper": 1.9, "mouthShrugLower": 1.4,
    "mouthShrugUpper": 1.85, "mouthPressLeft": 0.33, "mouthPressRight": 0.33, "mouthLowerDownLeft": 2.5,
    "mouthLowerDownRight": 2.5, "mouthUpperUpLeft": 3.2, "mouthUpperUpRight": 3.2, "mouthSmileLeft": 1.5,
    "mouthSmileRight": 1.5, "mouthDimpleLeft": 1.5, "mouthDimpleRight": 1.5, "jawForward": 3.5,
}
# The sealed pose of a /p b m/ (calibrated like the targets): jaw slightly open with mouthClose equal to
# it (lips together), a light press, no lip raise/drop.
SEAL_JAW_MAX = 0.13
SEAL_PRESS_MIN = 0.1

# Dominance strength (jaw, lips) per class. High lip dominance = the lips reach the target whatever
# the neighbours do (bilabials, labiodentals, rounding); low = the phone borrows neighbours' shapes.
DOMINANCE: dict[str, tuple[float, float]] = {
    "silence": (0.3, 0.3), "bilabial": (2.0, 8.0), "labiodental": (1.0, 5.0), "dental": (1.0, 1.0),
    "alveolar": (0.8, 0.4), "postalveolar": (0.8, 1.5), "velar": (0.6, 0.3), "glottal": (0.1, 0.1),
    "palatal": (0.6, 0.4), "rounded_glide": (0.6, 3.0), "open_vowel": (3.0, 1.0), "mid_vowel": (1.2, 0.8),
    "spread_vowel": (1.2, 1.5), "rounded_vowel": (1.2, 2.5), "nasal_vowel": (1.2, 1.5),
}
REST_DOMINANCE = 0.02  # pulls towards the neutral face far from any phone

_JAW_CHANNELS = ("jawOpen", "jawForward", "jawLeft", "jawRight")
_JAW_IDX = np.array([index(n) for n in _JAW_CHANNELS])
_LIP_IDX = np.array([i for i in LOWER_IDX if i not in set(_JAW_IDX.tolist())])
_I = {n: index(n) for n in ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthPressLeft",
                            "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
                            "mouthUpperUpRight", "mouthStretchLeft", "mouthStretchRight")}


def _vector(pose: dict[str, float]) -> np.ndarray:
    """(61,) target vector of a pose, calibrated by REAL_SPEECH_GAIN."""
    v = np.zeros(NUM_CHANNELS, np.float64)
    for name, w in pose.items():
        v[index(name)] = w * REAL_SPEECH_GAIN.get(name, 1.0)
    return v


_TARGET_VECTORS = {k: _vector(p) for k, p in TARGETS.items()}
_CLOSE_ROUNDED_V = _vector(_CLOSE_ROUNDED)
_OPEN_ROUNDED_V = _vector(_OPEN_ROUNDED)


def target_for(symbol: str) -> np.ndarray:
    """(61,) target pose of one IPA phone (stress makes vowels a little larger)."""
    cls = viseme_class(symbol)
    v = _TARGET_VECTORS[cls]
    if cls == "rounded_vowel":
        first = normalize(symbol)[:1]
        if first in "uyʊʏʉ":
            v = _CLOSE_ROUNDED_V
        elif first in "ɔœɒɶɞ":
            v = _OPEN_ROUNDED_V
    if "ˈ" in symbol and cls.endswith("vowel"):
        v = v * 1.15
    return v


def _centre_and_width(p: Phoneme, cls: str, width_scale: float) -> tuple[float, float]:
    dur = max(p.end_s - p.start_s, 1e-3)
    if cls == "bilabial" and normalize(p.symbol)[:1] in "pb":
        # Plosive labels (espeak) start near the release; the closure sits before it.
        centre = p.start_s
    else:
        centre = p.start_s + 0.5 * dur
    width = (0.5 * dur + 0.03) * width_scale
    if cls == "silence":
        width = max(width, 0.06)
    return centre, width


def _closure_windows(phonemes, lead_s: float, duration_s: float) -> list[tuple[float, float, float]]:
    """(start, end, anchor) in animation time of each bilabial closure."""
    out = []
    for p in phonemes:
        if not is_bilabial(p.symbol):
            continue
        plosive = normalize(p.symbol)[:1] in "pb"
        a = p.start_s - lead_s
        b = max(p.end_s - lead_s - (0.5 * (p.end_s - p.start_s) if plosive else 0.0), p.start_s)
        anchor = p.start_s - 0.5 * lead_s if plosive else 0.5 * (p.start_s + p.end_s) - 0.5 * lead_s
        out.append((max(a, 0.0), min(b, duration_s), min(max(anchor, 0.0), duration_s)))
    return out


def _check_phonemes(phonemes) -> list[Phoneme]:
    out = []
    for k, p in enumerate(phonemes):
        if not (np.isfinite(p.start_s) and np.isfinite(p.end_s)) or p.end_s < p.start_s:
            raise InputError(f"phoneme {k} ({p.symbol!r}) has an invalid time span {p.start_s}..{p.end_s}")
        out.append(p)
    return sorted(out, key=lambda p: p.start_s)


def lower_face_from_phonemes(phonemes, duration_s: float, fps: float = 30.0, intensity: float = 1.0,
                             rng: np.random.Generator | None = None,
                             style: TeacherStyle | None = None) -> Animation:
    """Lower-face animation for timed IPA phones: round(duration_s * fps) frames, lips leading the
    audio by the style's lead. `intensity` scales the mouth movement (closures stay closed); `rng`
    draws a per-speaker style (`sample_style`) for corpus variety; `style` sets one explicitly."""
    if not (fps > 0 and np.isfinite(fps)):
        raise InputError(f"fps must be positive, got {fps}")
    if not (duration_s >= 0 and np.isfinite(duration_s)):
        raise InputError(f"duration must be a non-negative number of seconds, got {duration_s}")
    if not 0 <= intensity <= 3:
        raise InputError(f"intensity must be 0..3, got {intensity}")
    if style is None:
        style = sample_style(rng) if rng is not None else TeacherStyle()
    phonemes = _check_phonemes(phonemes)
    n = int(round(duration_s * fps))
    # Rest before the first and after the last phone (espeak's trailing pause is only a few ms).
    span_end = max(duration_s, phonemes[-1].end_s if phonemes else 0.0)
    blend = list(phonemes)
    if phonemes:
        blend = [Phoneme("_", phonemes[0].start_s - 0.5, phonemes[0].start_s)] + blend
        blend.append(Phoneme("_", phonemes[-1].end_s, max(span_end, phonemes[-1].end_s) + 0.5))
    out = np.zeros((n, NUM_CHANNELS), np.float64)
    if n == 0:
        return Animation(out.astype(np.float32), fps, meta={"source": "teacher"})
    t = np.arange(n) / fps + style.lead_s  # articulation at frame time = audio time + lead

    num_jaw = np.zeros((n, NUM_CHANNELS))
    num_lip = np.zeros((n, NUM_CHANNELS))
    den_jaw = np.full(n, REST_DOMINANCE)
    den_lip = np.full(n, REST_DOMINANCE)
    for p in blend:
        cls = viseme_class(p.symbol)
        centre, width = _centre_and_width(p, cls, style.width)
        a_jaw, a_lip = DOMINANCE[cls]
        if cls == "silence":  # long pauses win (mouth comes to rest), short ones barely matter
            boost = 1.0 + 6.0 * min(max(p.end_s - p.start_s - 0.1, 0.0), 0.4)
            a_jaw, a_lip = a_jaw * boost, a_lip * boost
        lo = np.searchsorted(t, centre - 6 * width)
        hi = np.searchsorted(t, centre + 6 * width)
        if hi <= lo:
            continue
        d = np.exp(-np.abs(t[lo:hi] - centre) / width)
        tgt = target_for(p.symbol)
        num_jaw[lo:hi] += (a_jaw * d)[:, None] * tgt
        num_lip[lo:hi] += (a_lip * d)[:, None] * tgt
        den_jaw[lo:hi] += a_jaw * d
        den_lip[lo:hi] += a_lip * d
    out[:, _JAW_IDX] = num_jaw[:, _JAW_IDX] / den_jaw[:, None]
    out[:, _LIP_IDX] = num_lip[:, _LIP_IDX] / den_lip[:, None]

    # Style: jaw vs lip emphasis, overall articulation, left/right asymmetry.
    gain = style.articulation * intensity
    out[:, _JAW_IDX] *= gain * style.jaw
    out[:, _LIP_IDX] *= gain * style.lips
    if style.asymmetry:
        for i in LOWER_IDX:
            name = _name(i)
            if name.endswith("Left"):
                out[:, i] *= 1.0 - style.asymmetry
            elif name.endswith("Right"):
                out[:, i] *= 1.0 + style.asymmetry
    # ARKit mouthClose only makes sense up to jawOpen (lips closed against the open jaw).
    out[:, _I["mouthClose"]] = np.minimum(out[:, _I["mouthClose"]], out[:, _I["jawOpen"]])

    _seal_bilabials(out, phonemes, style.lead_s, fps, duration_s)
    out[:, LOWER_IDX] = np.clip(out[:, LOWER_IDX], 0.0, 1.0)
    return Animation(out.astype(np.float32), fps, meta={"source": "teacher"})


def _name(i: int) -> str:
    from .arkit import CHANNEL_NAMES

    return CHANNEL_NAMES[i]


def _seal_bilabials(out: np.ndarray, phonemes, lead_s: float, fps: float, duration_s: float) -> None:
    """Make every /p b m/ close the lips: full blend to a sealed pose inside the closure window (and on
    the frame nearest its anchor, so even a 20 ms /b/ gets one closed frame), half a blend on the
    frames either side."""
    n = len(out)
    k = np.zeros(n)
    for a, b, anchor in _closure_windows(phonemes, lead_s, duration_s):
        i0, i1 = int(np.ceil(a * fps - 1e-6)), int(np.floor(b * fps + 1e-6))
        idx = list(range(max(i0, 0), min(i1, n - 1) + 1)) + [min(int(round(anchor * fps)), n - 1)]
        for i in idx:
            k[i] = 1.0
        for i in (min(idx) - 1, max(idx) + 1):
            if 0 <= i < n:
                k[i] = max(k[i], 0.5)
    if not k.any():
        return
    sealed = out.copy()
    jaw = np.minimum(sealed[:, _I["jawOpen"]], SEAL_JAW_MAX)
    sealed[:, _I["jawOpen"]] = jaw
    sealed[:, _I["mouthClose"]] = jaw
    for name in ("mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight"):
        sealed[:, _I[name]] = 0.0
    for name in ("mouthPressLeft", "mouthPressRight"):
        sealed[:, _I[name]] = np.maximum(sealed[:, _I[name]], SEAL_PRESS_MIN)
    sealed[:, _I["mouthFunnel"]] *= 0.3
    sealed[:, _I["mouthStretchLeft"]] *= 0.5
    sealed[:, _I["mouthStretchRight"]] *= 0.5
    out[:] = out * (1 - k[:, None]) + sealed * k[:, None]

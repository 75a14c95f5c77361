"""Procedural upper-face performances: blinks, brows, squints, gaze, head motion and emotions.

The training corpus needs many upper-face performances to pair with speech so that the generator
learns to keep them separate from the lips; this module draws them from a seeded RNG. Event
statistics follow the face-animation literature: spontaneous blinks ~15-20/min with a refractory
period, 100-300 ms long with a fast closing and a slower opening phase; gaze as fixations
(~0.3-2.5 s) joined by saccades whose duration follows the main sequence (~21 ms + 2.2 ms/degree);
head motion as slow drift plus occasional nods and turns, with small nods on speech beats.

Sign conventions follow dubtool.render.gaze_angles: eye yaw > 0 turns the eye toward the subject's
left (+x), pitch > 0 looks down; the eyeLook* blendshapes are set consistently (look-out of the left
eye = yaw > 0). Head yaw/pitch/roll are radians.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arkit import LOWER_IDX, NUM_CHANNELS, Animation, index
from .errors import InputError

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "fear", "disgust")

# Upper-face shape of each emotion (ARKit weights at full strength).
EMOTION_UPPER: dict[str, dict[str, float]] = {
    "neutral": {},
    "joy": {"cheekSquintLeft": 0.45, "cheekSquintRight": 0.45, "eyeSquintLeft": 0.25, "eyeSquintRight": 0.25},
    "surprise": {"browInnerUp": 0.6, "browOuterUpLeft": 0.55, "browOuterUpRight": 0.55, "eyeWideLeft": 0.5,
                 "eyeWideRight": 0.5},
    "anger": {"browDownLeft": 0.6, "browDownRight": 0.6, "eyeSquintLeft": 0.25, "eyeSquintRight": 0.25,
              "noseSneerLeft": 0.25, "noseSneerRight": 0.25},
    "sadness": {"browInnerUp": 0.55, "browDownLeft": 0.1, "browDownRight": 0.1, "eyeSquintLeft": 0.1,
                "eyeSquintRight": 0.1},
    "fear": {"browInnerUp": 0.55, "browOuterUpLeft": 0.3, "browOuterUpRight": 0.3, "eyeWideLeft": 0.4,
             "eyeWideRight": 0.4},
    "disgust": {"noseSneerLeft": 0.5, "noseSneerRight": 0.5, "browDownLeft": 0.3, "browDownRight": 0.3,
                "eyeSquintLeft": 0.2, "eyeSquintRight": 0.2},
}
# What the same emotion does to the mouth: added by the corpus on top of the teacher's lip sync.
EMOTION_LOWER: dict[str, dict[str, float]] = {
    "neutral": {},
    "joy": {"mouthSmileLeft": 0.45, "mouthSmileRight": 0.45, "mouthDimpleLeft": 0.1, "mouthDimpleRight": 0.1},
    "surprise": {"jawOpen": 0.05, "mouthFunnel": 0.05},
    "anger": {"mouthPressLeft": 0.2, "mouthPressRight": 0.2, "mouthFrownLeft": 0.15, "mouthFrownRight": 0.15},
    "sadness": {"mouthFrownLeft": 0.35, "mouthFrownRight": 0.35, "mouthShrugLower": 0.15},
    "fear": {"mouthStretchLeft": 0.25, "mouthStretchRight": 0.25},
    "disgust": {"mouthUpperUpLeft": 0.25, "mouthUpperUpRight": 0.25, "mouthFrownLeft": 0.1,
                "mouthFrownRight": 0.1},
}


@dataclass(frozen=True)
class UpperFaceConfig:
    blink_rate_per_min: tuple[float, float] = (12.0, 22.0)  # per-performance rate drawn from this range
    blink_refractory_s: float = 0.5
    blink_duration_s: tuple[float, float] = (0.10, 0.30)
    fixation_s: tuple[float, float] = (0.3, 2.5)
    gaze_sigma_rad: tuple[float, float] = (0.12, 0.06)  # yaw, pitch spread of fixation targets
    head_drift_rad: tuple[float, float, float] = (0.06, 0.04, 0.02)  # yaw, pitch, roll
    nods_per_min: float = 4.0
    turns_per_min: float = 2.0
    brow_raises_per_min: float = 6.0
    frowns_per_min: float = 1.5
    squints_per_min: float = 1.5


@dataclass(frozen=True)
class UpperFace:
    """`animation`: upper-face blendshapes, head and eye rotations (lower face zero);
    `lower_offset`: (T,61) the emotion's mouth offsets (lower-face channels only) for the corpus to add."""

    animation: Animation
    lower_offset: np.ndarray


def _bump(t: np.ndarray, start: float, attack: float, hold: float, release: float) -> np.ndarray:
    """0..1 envelope: smoothstep up over `attack`, flat `hold`, smoothstep down over `release`."""
    def ss(x):
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3 - 2 * x)
    up = ss((t - start) / max(attack, 1e-6))
    down = 1.0 - ss((t - start - attack - hold) / max(release, 1e-6))
    return np.minimum(up, down)


def _poisson_times(rng, duration_s: float, rate_per_s: float, refractory_s: float, start_s: float = 0.0):
    out, t = [], start_s + rng.exponential(1.0 / rate_per_s) if rate_per_s > 0 else duration_s
    while t < duration_s:
        out.append(t)
        t += refractory_s + rng.exponential(max(1.0 / rate_per_s - refractory_s, 0.05))
    return out


def _smooth_noise(rng, n: int, fps: float, sigma: float, corr_s: float) -> np.ndarray:
    """Ornstein-Uhlenbeck process, stationary std `sigma`, correlation time `corr_s`."""
    if n == 0:
        return np.zeros(0)
    a = np.exp(-1.0 / (fps * corr_s))
    e = rng.normal(0.0, sigma * np.sqrt(1 - a * a), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sigma)
    for i in range(1, n):
        x[i] = a * x[i - 1] + e[i]
    return x


def _activity(speech_activity, n: int) -> np.ndarray | None:
    if speech_activity is None:
        return None
    a = np.asarray(speech_activity, dtype=np.float64).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise InputError("speech activity must be a non-empty array of finite numbers")
    if a.size != n:
        a = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, a.size), a)
    peak = np.percentile(a, 99) if a.size else 0.0
    return np.clip(a / peak, 0.0, 1.0) if peak > 0 else np.zeros(n)


def _emotion_segments(rng, duration_s: float, emotion: str | None) -> list[tuple[str, float, float, float]]:
    """(emotion, start, end, strength). A named emotion covers the whole clip at a varying strength;
    None draws a few segments (half of the time neutral)."""
    if emotion is not None:
        return [(emotion, 0.0, duration_s, float(rng.uniform(0.6, 1.0)))]
    segs, t = [], 0.0
    while t < duration_s:
        length = float(rng.uniform(2.0, 8.0))
        name = "neutral" if rng.random() < 0.5 else str(rng.choice(EMOTIONS[1:]))
        segs.append((name, t, min(t + length, duration_s), float(rng.uniform(0.3, 1.0))))
        t += length
    return segs


def procedural_upper_face(duration_s: float, fps: float, rng: np.random.Generator, emotion: str | None = None,
                          speech_activity=None, config: UpperFaceConfig = UpperFaceConfig()) -> UpperFace:
    """A random but plausible upper-face performance of `duration_s` seconds at `fps`.

    `emotion` (one of EMOTIONS) colours the whole clip; None draws emotion segments. `speech_activity`
    (per-frame loudness, any scale; resampled if its length differs) adds head nods and brow raises on
    speech beats and moves blinks towards pauses."""
    if not (fps > 0 and np.isfinite(fps)):
        raise InputError(f"fps must be positive, got {fps}")
    if not (duration_s >= 0 and np.isfinite(duration_s)):
        raise InputError(f"duration must be a non-negative number of seconds, got {duration_s}")
    if emotion is not None and emotion not in EMOTIONS:
        raise InputError(f"unknown emotion {emotion!r}; use one of: {', '.join(EMOTIONS)}")
    if rng is None:
        rng = np.random.default_rng(0)
    c = config
    n = int(round(duration_s * fps))
    t = np.arange(n) / fps
    v = np.zeros((n, NUM_CHANNELS), np.float64)
    lower = np.zeros((n, NUM_CHANNELS), np.float64)
    if n == 0:
        return UpperFace(Animation(v.astype(np.float32), fps, meta={"source": "upperface", "blinks": []}),
                         lower.astype(np.float32))
    act = _activity(speech_activity, n)
    I = index

    # --- emotions
    segs = _emotion_segments(rng, duration_s, emotion)
    for name, a, b, strength in segs:
        if name == "neutral" or b <= a:
            continue
        ramp = min(0.5, 0.25 * (b - a))
        env = strength * _bump(t, a, ramp, max(b - a - 2 * ramp, 0.0), ramp)
        env *= 1.0 + 0.15 * _smooth_noise(rng, n, fps, 1.0, 1.5).clip(-2, 2)
        for ch, w in EMOTION_UPPER[name].items():
            v[:, I(ch)] += w * env
        for ch, w in EMOTION_LOWER[name].items():
            lower[:, I(ch)] += w * env

    # --- brow raises (more likely on speech beats), frowns, squints
    rate_scale = 1.0 if act is None else 0.5
    for s in _poisson_times(rng, duration_s, rate_scale * c.brow_raises_per_min / 60, 0.8):
        amp, dur = rng.uniform(0.15, 0.55), rng.uniform(0.3, 1.2)
        env = amp * _bump(t, s, 0.12, dur, 0.25)
        outer = rng.uniform(0.4, 1.0)
        v[:, I("browInnerUp")] += env
        v[:, I("browOuterUpLeft")] += outer * env * rng.uniform(0.85, 1.15)
        v[:, I("browOuterUpRight")] += outer * env * rng.uniform(0.85, 1.15)
    if act is not None:  # beats: onsets of loud stretches
        onsets = np.nonzero((act[1:] > 0.6) & (act[:-1] <= 0.6))[0] + 1
        for i in onsets:
            if rng.random() < 0.35:
                amp = rng.uniform(0.15, 0.4)
                env = amp * _bump(t, t[i] - 0.08, 0.1, rng.uniform(0.1, 0.4), 0.25)
                v[:, I("browInnerUp")] += env
                v[:, I("browOuterUpLeft")] += 0.7 * env
                v[:, I("browOuterUpRight")] += 0.7 * env
    for s in _poisson_times(rng, duration_s, c.frowns_per_min / 60, 1.0):
        env = rng.uniform(0.15, 0.45) * _bump(t, s, 0.2, rng.uniform(0.4, 1.5), 0.4)
        v[:, I("browDownLeft")] += env
        v[:, I("browDownRight")] += env
    for s in _poisson_times(rng, duration_s, c.squints_per_min / 60, 1.0):
        env = rng.uniform(0.1, 0.35) * _bump(t, s, 0.15, rng.uniform(0.3, 1.2), 0.3)
        for ch in ("eyeSquintLeft", "eyeSquintRight"):
            v[:, I(ch)] += env
        for ch in ("cheekSquintLeft", "cheekSquintRight"):
            v[:, I(ch)] += 0.4 * env
    # resting asymmetry / tone of the brows
    for ch in ("browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight"):
        v[:, I(ch)] += abs(rng.normal(0, 0.03)) + np.abs(_smooth_noise(rng, n, fps, 0.02, 2.0))

    # --- head: drift, turns, nods, speech beats
    head = np.zeros((n, 3))
    for k, (sig, corr) in enumerate(zip(c.head_drift_rad, (3.0, 2.0, 4.0))):
        head[:, k] = _smooth_noise(rng, n, fps, sig, corr) + rng.normal(0, sig)
    yaw_level = 0.0
    for s in _poisson_times(rng, duration_s, c.turns_per_min / 60, 2.0):
        new = float(np.clip(rng.normal(0, 0.15), -0.35, 0.35))
        head[:, 0] += (new - yaw_level) * _bump(t, s, rng.uniform(0.4, 0.9), 1e9, 1.0)
        yaw_level = new
    for s in _poisson_times(rng, duration_s, c.nods_per_min / 60, 1.0):
        head[:, 1] += rng.uniform(0.03, 0.1) * _bump(t, s, 0.15, 0.05, 0.25)
    if act is not None:
        smooth = np.convolve(act, np.ones(max(int(fps * 0.2), 1)) / max(int(fps * 0.2), 1), mode="same")
        head[:, 1] += 0.03 * smooth  # chin dips slightly while speaking
        for i in np.nonzero((act[1:] > 0.7) & (act[:-1] <= 0.7))[0] + 1:
            if rng.random() < 0.5:
                head[:, 1] += rng.uniform(0.02, 0.06) * _bump(t, t[i] - 0.05, 0.1, 0.0, 0.2)
    v[:, I("HeadYaw")], v[:, I("HeadPitch")], v[:, I("HeadRoll")] = head[:, 0], head[:, 1], head[:, 2]

    # --- gaze: fixations joined by saccades; partly counter-rotates head turns (VOR)
    gaze = np.zeros((n, 2))
    pos = np.zeros(2)
    ts, saccades = 0.0, []
    while ts < duration_s:
        fix = float(np.exp(rng.uniform(np.log(c.fixation_s[0]), np.log(c.fixation_s[1]))))
        if rng.random() < 0.15:  # a glance away
            target = np.array([rng.normal(0, 0.3), rng.normal(0.05, 0.12)])
        else:
            target = np.array([rng.normal(0, c.gaze_sigma_rad[0]), rng.normal(0, c.gaze_sigma_rad[1])])
        target = np.clip(target, [-0.5, -0.35], [0.5, 0.4])
        amp_deg = float(np.degrees(np.linalg.norm(target - pos)))
        sdur = (21 + 2.2 * amp_deg) / 1000.0
        saccades.append((ts, sdur, pos.copy(), target))
        pos = target
        ts += sdur + fix
    for s, sdur, p0, p1 in saccades:
        w = _bump(t, s, sdur, 1e9, 1.0)[:, None]
        sel = t >= s
        gaze[sel] = (p0 + (p1 - p0) * w[sel])
    gaze[:, 0] -= 0.5 * (head[:, 0] - np.mean(head[:, 0]))  # vestibulo-ocular: eyes hold the target
    gaze[:, 1] -= 0.3 * (head[:, 1] - np.mean(head[:, 1]))
    gaze += np.stack([_smooth_noise(rng, n, fps, 0.004, 0.1), _smooth_noise(rng, n, fps, 0.004, 0.1)], 1)
    gaze = np.clip(gaze, [-0.6, -0.4], [0.6, 0.45])
    verg = rng.uniform(0.0, 0.03)  # slight convergence
    for side, sgn in (("Left", 1.0), ("Right", -1.0)):
        yaw = gaze[:, 0] - sgn * verg
        pitch = gaze[:, 1]
        v[:, I(f"{side}EyeYaw")], v[:, I(f"{side}EyePitch")] = yaw, pitch
        out_, in_ = np.maximum(sgn * yaw, 0) / 0.6, np.maximum(-sgn * yaw, 0) / 0.6
        v[:, I(f"eyeLookOut{side}")], v[:, I(f"eyeLookIn{side}")] = out_, in_
        v[:, I(f"eyeLookDown{side}")] = np.maximum(pitch, 0) / 0.45
        v[:, I(f"eyeLookUp{side}")] = np.maximum(-pitch, 0) / 0.45

    # --- blinks (on top of everything: they close the lids fully)
    rate = rng.uniform(*c.blink_rate_per_min) / 60.0
    blink_times = _poisson_times(rng, duration_s, rate, c.blink_refractory_s)
    # gaze shifts often trigger blinks; speech pauses collect them
    if act is not None and blink_times:
        quiet = act < 0.2
        moved = []
        for s in blink_times:
            i = min(int(s * fps), n - 1)
            j = np.nonzero(quiet[max(i - int(fps), 0):i + int(fps)])[0]
            if j.size and rng.random() < 0.5:
                s = (max(i - int(fps), 0) + j[np.argmin(np.abs(j + max(i - int(fps), 0) - i))]) / fps
            moved.append(s)
        blink_times = sorted(moved)
        blink_times = [s for k, s in enumerate(blink_times) if k == 0 or s - blink_times[k - 1] > c.blink_refractory_s]
    blinks = []
    lids = np.zeros(n)
    for s in blink_times:
        dur = float(rng.uniform(*c.blink_duration_s))
        close, hold = 0.3 * dur, 0.1 * dur
        amp = rng.uniform(0.9, 1.0)
        env = amp * _bump(t, s, close, hold, dur - close - hold)
        peak = int(round((s + close + 0.5 * hold) * fps))
        if 0 <= peak < n:  # a 100 ms blink spans 3 frames at 30 fps: make sure one shows it closed
            env[peak] = max(env[peak], amp)
        lids = np.maximum(lids, env)
        blinks.append((round(s, 4), round(dur, 4)))
    base = abs(rng.normal(0.05, 0.03))
    for side in ("Left", "Right"):
        b = v[:, I(f"eyeBlink{side}")] + base
        b += 0.3 * np.maximum(gaze[:, 1], 0)  # lids follow downward gaze
        v[:, I(f"eyeBlink{side}")] = np.maximum(b, lids * rng.uniform(0.97, 1.0))
        v[:, I(f"eyeWide{side}")] *= 1.0 - lids

    v[:, LOWER_IDX] = 0.0
    v[:, :52] = np.clip(v[:, :52], 0.0, 1.0)
    lower = np.clip(lower, 0.0, 1.0)
    meta = {"source": "upperface", "blinks": blinks, "emotions": [(e, round(a, 3), round(b, 3), round(s, 3))
                                                                  for e, a, b, s in segs]}
    return UpperFace(Animation(v.astype(np.float32), fps, meta=meta), lower.astype(np.float32))

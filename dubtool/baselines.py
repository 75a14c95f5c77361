"""Reference animations the flow model is measured against, built from the same inputs:

* **naive copy** — the source performance time-warped onto the dub (all 61 channels). This is what a
  studio gets without dubtool: the actor's face, but lips moving to the *original* language.
* **teacher** — the transcript-driven rule system (`dubtool.teacher.lower_face_from_phonemes`, viseme
  targets + coarticulation from the dub's phoneme timing) for the lower face, and the time-warped
  source for the upper face, head and eyes. It needs the dub transcript; the flow model does not.

Time warping samples the source at `TimeMap.source_time(dub frame times)` (the `dubtool align` time
map, JSON knots [[source_s, dub_s], ...]); without a time map the source is stretched uniformly.
"""

from __future__ import annotations

import numpy as np

from .arkit import LOWER_IDX, NUM_CHANNELS, Animation
from .errors import DependencyError, InputError


def source_times(num_frames: int, fps: float, source_duration_s: float, dub_duration_s: float,
                 timemap=None) -> np.ndarray:
    """Source seconds for each dub frame: through the time map's knots, or a uniform stretch."""
    dub_t = np.arange(num_frames, dtype=np.float64) / fps
    if timemap is not None:
        return np.asarray(timemap.source_time(dub_t), dtype=np.float64)
    if dub_duration_s <= 0:
        raise InputError("dub duration must be positive")
    return dub_t * (source_duration_s / dub_duration_s)


def warp_to_dub(source: Animation, num_frames: int, fps: float, dub_duration_s: float, timemap=None) -> Animation:
    """The source animation resampled onto the dub's `num_frames` frames at `fps` (linear interpolation
    of every channel at the mapped source times; clamped at the ends)."""
    if num_frames < 1:
        raise InputError("the dub is shorter than one animation frame")
    t = source_times(num_frames, fps, source.duration_s, dub_duration_s, timemap)
    src_t = source.times_s
    v = np.empty((num_frames, NUM_CHANNELS), np.float32)
    for c in range(NUM_CHANNELS):
        v[:, c] = np.interp(t, src_t, source.values[:, c])
    return Animation(v, fps, meta={"baseline": "warped_source"})


def naive_copy(source: Animation, num_frames: int, fps: float, dub_duration_s: float, timemap=None) -> Animation:
    """Baseline: copy the source animation (lips included), time-warped onto the dub."""
    a = warp_to_dub(source, num_frames, fps, dub_duration_s, timemap)
    a.meta["baseline"] = "naive_copy"
    return a


def teacher_lower_face(phonemes, num_frames: int, fps: float) -> np.ndarray:
    """(num_frames, 61) lower-face curves from the dub's phonemes by the rule-based teacher."""
    try:
        from .teacher import lower_face_from_phonemes
    except ImportError as e:
        raise DependencyError(f"the teacher baseline needs dubtool.teacher ({e})") from None
    anim = lower_face_from_phonemes(list(phonemes), num_frames / fps, fps)
    v = np.asarray(anim.values, np.float32)
    if len(v) != num_frames:  # rounding of duration * fps: pad with the last frame or trim
        v = v[:num_frames] if len(v) > num_frames else np.concatenate(
            [v, np.repeat(v[-1:] if len(v) else np.zeros((1, NUM_CHANNELS), np.float32), num_frames - len(v), 0)])
    return v


def teacher(phonemes, warped_source: Animation) -> Animation:
    """Baseline: teacher lower face on the dub's phonemes + the warped source's upper face, head and eyes."""
    v = warped_source.values.copy()
    lower = teacher_lower_face(phonemes, warped_source.num_frames, warped_source.fps)
    v[:, LOWER_IDX] = lower[:, LOWER_IDX]
    return Animation(v, warped_source.fps, meta={"baseline": "teacher"})


def teacher_without_source(phonemes, num_frames: int, fps: float) -> Animation:
    """Teacher lower face with a still upper face (when no source performance is given)."""
    v = np.zeros((num_frames, NUM_CHANNELS), np.float32)
    v[:, LOWER_IDX] = teacher_lower_face(phonemes, num_frames, fps)[:, LOWER_IDX]
    return Animation(v, fps, meta={"baseline": "teacher"})

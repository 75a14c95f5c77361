"""The 61 animation channels in Live Link Face order, and the one `Animation` type every stage uses.

Order: the 52 ARKit blendshapes as Unreal's `EARFaceBlendShape` enum lists them (which is the
column order of Live Link Face CSV recordings), then head yaw/pitch/roll and the two eyes'
yaw/pitch/roll. Blendshape weights are 0..1; rotations are radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError

# Live Link Face spelling (PascalCase), index = Unreal EARFaceBlendShape value.
LIVE_LINK_NAMES: tuple[str, ...] = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft",
    "EyeSquintLeft", "EyeWideLeft",
    "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight",
    "JawForward", "JawLeft", "JawRight", "JawOpen",
    "MouthClose", "MouthFunnel", "MouthPucker", "MouthLeft", "MouthRight",
    "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft", "MouthFrownRight",
    "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper",
    "MouthPressLeft", "MouthPressRight", "MouthLowerDownLeft", "MouthLowerDownRight",
    "MouthUpperUpLeft", "MouthUpperUpRight",
    "BrowDownLeft", "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight",
    "CheekPuff", "CheekSquintLeft", "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight",
    "TongueOut",
    "HeadYaw", "HeadPitch", "HeadRoll",
    "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)

NUM_BLENDSHAPES = 52
NUM_CHANNELS = 61
assert len(LIVE_LINK_NAMES) == NUM_CHANNELS


def _arkit_name(name: str) -> str:
    return name[0].lower() + name[1:]


# ARKit spelling (camelCase: eyeBlinkLeft, jawOpen, ...) for the 52 blendshapes; this is what
# Apple's ARFaceAnchor, MediaPipe's blendshape model and FBX/Maya rigs use.
BLENDSHAPE_NAMES: tuple[str, ...] = tuple(_arkit_name(n) for n in LIVE_LINK_NAMES[:NUM_BLENDSHAPES])
ROTATION_NAMES: tuple[str, ...] = LIVE_LINK_NAMES[NUM_BLENDSHAPES:]
CHANNEL_NAMES: tuple[str, ...] = BLENDSHAPE_NAMES + ROTATION_NAMES

_INDEX = {n: i for i, n in enumerate(CHANNEL_NAMES)}
_INDEX.update({n: i for i, n in enumerate(LIVE_LINK_NAMES)})
_INDEX.update({n.lower(): i for i, n in enumerate(LIVE_LINK_NAMES)})


def index(name: str) -> int:
    """Channel index for an ARKit (`jawOpen`) or Live Link (`JawOpen`) name, case-insensitive."""
    i = _INDEX.get(name, _INDEX.get(name.lower()))
    if i is None:
        raise InputError(f"unknown ARKit channel {name!r}; valid names are e.g. jawOpen, browInnerUp, HeadYaw")
    return i


def indices(names) -> np.ndarray:
    return np.array([index(n) for n in names], dtype=np.int64)


# Channel groups. Lower face = what speech drives (jaw, mouth, cheeks puff, tongue); upper face =
# what the source performance drives (brows, eyes, squint); head and eye rotations separate.
EYE_BLENDSHAPES = tuple(n for n in BLENDSHAPE_NAMES if n.startswith("eye"))
BROW_BLENDSHAPES = tuple(n for n in BLENDSHAPE_NAMES if n.startswith("brow"))
LOWER_FACE = tuple(n for n in BLENDSHAPE_NAMES if n.startswith(("jaw", "mouth", "tongue", "cheekPuff")))
UPPER_FACE = EYE_BLENDSHAPES + BROW_BLENDSHAPES + ("cheekSquintLeft", "cheekSquintRight",
                                                   "noseSneerLeft", "noseSneerRight")
HEAD_ROTATION = ("HeadYaw", "HeadPitch", "HeadRoll")
EYE_ROTATION = ROTATION_NAMES[3:]
LOWER_IDX = indices(LOWER_FACE)
UPPER_IDX = indices(UPPER_FACE)
HEAD_IDX = indices(HEAD_ROTATION)
EYE_ROT_IDX = indices(EYE_ROTATION)
BLENDSHAPE_IDX = np.arange(NUM_BLENDSHAPES)
ROTATION_IDX = np.arange(NUM_BLENDSHAPES, NUM_CHANNELS)
assert len(set(LOWER_FACE) | set(UPPER_FACE)) == NUM_BLENDSHAPES and not set(LOWER_FACE) & set(UPPER_FACE)

# Lip channels that metrics and tests look at.
BILABIAL_CLOSURE = ("mouthClose", "mouthPressLeft", "mouthPressRight", "mouthRollLower", "mouthRollUpper")


@dataclass
class Animation:
    """Frames x 61 float32 channel values at a fixed frame rate.

    `values[:, :52]` are blendshape weights in 0..1; `values[:, 52:]` are head and eye rotations in
    radians. `timecode_start_s` is the wall-clock time of frame 0 (Live Link Face timecodes), or None.
    """

    values: np.ndarray
    fps: float
    timecode_start_s: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .diskarray import DiskArray

        on_disk = isinstance(self.values, DiskArray)  # a long take's channels left in their temporary file (extract)
        v = self.values if on_disk else np.asarray(self.values, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != NUM_CHANNELS or v.dtype != np.float32:
            raise InputError(f"animation must be frames x {NUM_CHANNELS}{' float32' if on_disk else ''}, "
                             f"got shape {tuple(v.shape)}")
        blocks = ((a, v.read(a, a + 8192)) for a in range(0, len(v), 8192)) if on_disk else ((0, v),)
        for a, block in blocks:
            if not np.all(np.isfinite(block)):
                bad = a + int(np.argwhere(~np.isfinite(block))[0][0])
                raise InputError(f"animation has NaN/inf values (first at frame {bad})")
        if not (self.fps > 0 and np.isfinite(self.fps)):
            raise InputError(f"fps must be positive, got {self.fps}")
        self.values = v

    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    @property
    def times_s(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.float64) / self.fps

    def channel(self, name: str) -> np.ndarray:
        return self.values[:, index(name)]

    def with_values(self, values: np.ndarray) -> "Animation":
        return Animation(values, self.fps, self.timecode_start_s, dict(self.meta))

    def clamped(self) -> "Animation":
        """Blendshape weights clipped to 0..1 (rotations untouched)."""
        v = self.values.copy()
        v[:, :NUM_BLENDSHAPES] = np.clip(v[:, :NUM_BLENDSHAPES], 0.0, 1.0)
        return self.with_values(v)

    def slice_s(self, start_s: float | None, end_s: float | None) -> "Animation":
        a = 0 if start_s is None else max(0, int(round(start_s * self.fps)))
        b = self.num_frames if end_s is None else min(self.num_frames, int(round(end_s * self.fps)))
        tc = None if self.timecode_start_s is None else self.timecode_start_s + a / self.fps
        return Animation(self.values[a:b], self.fps, tc, dict(self.meta))

    def resampled(self, fps: float) -> "Animation":
        """Linear resampling to another frame rate (same duration)."""
        if abs(fps - self.fps) < 1e-9:
            return self
        n = max(1, int(round(self.duration_s * fps)))
        t_new = np.arange(n) / fps
        t_old = self.times_s
        v = np.stack([np.interp(t_new, t_old, self.values[:, c]) for c in range(NUM_CHANNELS)], axis=1)
        return Animation(v, fps, self.timecode_start_s, dict(self.meta))

    @staticmethod
    def zeros(num_frames: int, fps: float) -> "Animation":
        return Animation(np.zeros((num_frames, NUM_CHANNELS), np.float32), fps)

"""`Performance`: what `dubtool extract` reads off a video of an actor, and what `localize` takes.

Saved as a `.perf` file: a zip (numpy .npz layout) holding the arrays, `meta.json` and the source
audio as 16 kHz mono WAV, so one file carries a whole take.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arkit import Animation
from .audio import Audio
from .diskarray import DiskArray
from .errors import InputError
from .fileio import atomic_path, require_file

FORMAT_VERSION = 1
NUM_LANDMARKS = 478


@dataclass
class Performance:
    """A tracked take. T = number of video frames at `animation.fps`.

    landmarks_image:     (T, 478, 3) MediaPipe landmarks, x/y normalised to the image (0..1), z relative.
    landmarks_canonical: (T, 478, 3) the same points with head pose removed, in the units of the
                         canonical face mesh (the rig's space; ~cm).
    head_pose:           (T, 4, 4) canonical -> camera transform per frame.
    animation:           the 61 ARKit channels (blendshapes 0..1, rotations in radians).
    face_found:          (T,) bool; frames without a face hold interpolated values (short gaps) or
                         the nearest tracked frame (long gaps, reported in meta['gaps']).
    confidence:          (T,) float32 0..1.
    audio:               the source audio track (16 kHz mono) or None for a silent video.
    meta:                fps, width, height, duration_s, source, tool_version, gaps, ...
    """

    landmarks_image: np.ndarray
    landmarks_canonical: np.ndarray
    head_pose: np.ndarray
    animation: Animation
    face_found: np.ndarray
    confidence: np.ndarray
    audio: Audio | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.animation.num_frames
        for name, shape in (("landmarks_image", (t, NUM_LANDMARKS, 3)), ("landmarks_canonical", (t, NUM_LANDMARKS, 3)),
                            ("head_pose", (t, 4, 4)), ("face_found", (t,)), ("confidence", (t,))):
            arr = getattr(self, name)
            if tuple(arr.shape) != shape:
                raise InputError(f"performance field {name} has shape {tuple(arr.shape)}, expected {shape}")

    @property
    def fps(self) -> float:
        return self.animation.fps

    @property
    def num_frames(self) -> int:
        return self.animation.num_frames

    @property
    def duration_s(self) -> float:
        return self.animation.duration_s


def save_performance(perf: Performance, path: str | os.PathLike) -> Path:
    """Write a .perf file atomically."""
    import soundfile as sf

    meta = dict(perf.meta)
    meta.update(format_version=FORMAT_VERSION, fps=perf.fps, num_frames=perf.num_frames,
                timecode_start_s=perf.animation.timecode_start_s)
    with atomic_path(path, suffix=".perf") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            arrays = {name: getattr(perf, name) for name in ("landmarks_image", "landmarks_canonical", "head_pose",
                                                                "face_found", "confidence")}
            arrays["animation"] = perf.animation.values
            for name, value in arrays.items():
                # Streamed into the zip member (np.save writes in buffered pieces; a DiskArray goes block by
                # block): no in-memory copy of a long take's landmarks.
                with z.open(f"{name}.npy", "w", force_zip64=value.nbytes > (1 << 30)) as f:
                    if isinstance(value, DiskArray):
                        _save_rows(f, value)
                    else:
                        np.save(f, np.asarray(value))
            if perf.audio is not None and isinstance(perf.audio.samples, DiskArray):
                _write_wav_member(z, perf.audio)
            elif perf.audio is not None:
                buf = io.BytesIO()
                sf.write(buf, perf.audio.samples, perf.audio.sample_rate, format="WAV", subtype="FLOAT")
                z.writestr("audio.wav", buf.getvalue())
            z.writestr("meta.json", json.dumps(meta, indent=1, default=str))
    return Path(path)


SAVE_BLOCK_ROWS = 1024


def _save_rows(f, arr: DiskArray) -> None:
    """np.save's bytes for an array kept on disk: the same .npy header, then the rows block by block."""
    header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False, "shape": tuple(arr.shape)}
    np.lib.format.write_array_header_1_0(f, header)
    for a in range(0, len(arr), SAVE_BLOCK_ROWS):
        f.write(arr.read(a, a + SAVE_BLOCK_ROWS).tobytes())


def _write_wav_member(z: zipfile.ZipFile, audio: Audio) -> None:
    """audio.wav of a recording kept on disk: written by soundfile block by block into a temporary file
    (the same file as sf.write of the whole), then copied into the zip member in pieces."""
    import shutil
    import tempfile

    import soundfile as sf

    samples = audio.samples
    with tempfile.TemporaryDirectory(prefix="dubtool-wav-") as td:
        tmp = os.path.join(td, "audio.wav")
        with sf.SoundFile(tmp, "w", audio.sample_rate, 1, "FLOAT", format="WAV") as w:
            for a in range(0, len(samples), 1 << 20):
                w.write(samples[a:a + (1 << 20)])
        with open(tmp, "rb") as src, z.open("audio.wav", "w", force_zip64=os.path.getsize(tmp) > (1 << 30)) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def load_performance(path: str | os.PathLike) -> Performance:
    """Read a .perf file; a clear InputError for anything that is not one."""
    import soundfile as sf

    p = require_file(path, "performance file")
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            if "meta.json" not in names:
                raise InputError(f"{p}: not a dubtool performance (.perf) file")
            meta = json.loads(z.read("meta.json"))
            if meta.get("format_version") != FORMAT_VERSION:
                raise InputError(f"{p}: performance format version {meta.get('format_version')} "
                                 f"(this dubtool reads {FORMAT_VERSION}); run `dubtool extract` again")
            arrays = {n[:-4]: np.load(io.BytesIO(z.read(n))) for n in names if n.endswith(".npy")}
            audio = None
            if "audio.wav" in names:
                samples, sr = sf.read(io.BytesIO(z.read("audio.wav")), dtype="float32")
                audio = Audio(samples, sr)
    except (zipfile.BadZipFile, KeyError, ValueError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: corrupt performance file ({e})") from None
    try:
        anim = Animation(arrays["animation"], float(meta["fps"]), meta.get("timecode_start_s"))
        return Performance(arrays["landmarks_image"], arrays["landmarks_canonical"], arrays["head_pose"], anim,
                           arrays["face_found"].astype(bool), arrays["confidence"].astype(np.float32), audio, meta)
    except KeyError as e:
        raise InputError(f"{p}: corrupt performance file (missing {e})") from None
    except (InputError, ValueError) as e:  # arrays of the wrong shape or type
        raise InputError(f"{p}: corrupt performance file ({e})") from None

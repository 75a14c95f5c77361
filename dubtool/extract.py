"""Video of an actor -> `Performance`: MediaPipe FaceLandmarker per frame (landmarks, ARKit
blendshapes, head pose), head pose removed into canonical-mesh space, eye rotations from the
irises, gaps filled, One Euro smoothing.

Conventions (shared with rig.py's head_rotation_matrix, yaw about +y, pitch about +x, roll about +z,
R = Ry(yaw) @ Rx(pitch) @ Rz(roll), canonical space x = subject's left, y = up, z = out of the face):
  HeadYaw   > 0: the subject turns to their left (nose moves to image right).
  HeadPitch > 0: the subject looks down.
  HeadRoll  > 0: the head tilts toward the subject's right shoulder (their left ear goes up).
  Eye yaw/pitch use the same signs (gaze toward the subject's left / downward); eye roll is 0.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from . import __version__
from .arkit import BLENDSHAPE_NAMES, NUM_BLENDSHAPES, NUM_CHANNELS, Animation, index
from .errors import InputError, ModelError, NoFaceError
from .performance import NUM_LANDMARKS, Performance
from .smoothing import OneEuroConfig, one_euro_zero_phase, one_euro_zero_phase_blocks
from .video import VideoInfo, iter_frames, probe, scaled_size

# Vertices that move with the skull, not with expression: forehead, nose bridge and tip, eye
# corners, temples and upper cheekbones (no brow, lid, lip or jaw point). Used to fit each frame
# to the canonical mesh.
STABLE_VERTICES = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 127, 356, 234, 454,
                   67, 297, 54, 284, 117, 346, 119, 348, 121, 350, 129, 358, 143, 372)
RIGHT_IRIS, LEFT_IRIS = 468, 473  # iris centres: subject's right eye (image left), subject's left eye
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (362, 263)
EYEBALL_RADIUS_CM = 1.2  # human eyeball ~24 mm across; canonical units are ~cm
# Iris centre height above the eye-corner line for a level gaze (cm), measured on a camera-facing
# still: the canthi sit below the iris centre, so without this a straight gaze reads as looking up.
IRIS_REST_UP_CM = 0.25
# How far the iris centre sits outward (towards the ear) of the eye-corner midpoint for a straight
# gaze (cm). Measured as the median of (left x - right x) / 2 over neutral frames: 0.10-0.11 on the
# closed-loop preview face (irises drawn dead centre), 0.13-0.14 on the camera-facing astronaut still,
# 0.12 on examples/actor_en.mp4. Without it a straight gaze read as both eyes diverging (left eye yaw
# +0.05..+0.08, right -0.10..-0.17 rad).
IRIS_REST_OUT_CM = 0.11
# Clear limits: a long take's landmarks go to temporary files (~11.5 KB a frame on disk: 2 h at 30 fps is
# ~2.5 GB of scratch space); frames larger than any camera or codec makes are a corrupt header.
MAX_FRAMES = 2 * 3600 * 30
MAX_FRAME_SIDE = 16384
FIT_RESIDUAL_CM = 1.0  # RMS fit residual (cm) at which confidence falls to 1/e; good tracks ~0.3-0.4


@dataclass(frozen=True)
class ExtractOptions:
    """fps: output frame rate (None = the video's average rate); smoothing: zero-phase One Euro on
    landmarks, blendshapes and head pose (None = off); max_track_width: frames wider than this are downscaled
    before tracking; max_gap_s: gaps shorter than this are interpolated, longer ones hold the
    nearest tracked frame; min_face_ratio: below this share of frames with a face -> NoFaceError."""

    fps: float | None = None
    smoothing: OneEuroConfig | None = field(default_factory=OneEuroConfig)
    max_track_width: int = 1280
    max_gap_s: float = 0.5
    min_face_ratio: float = 0.1
    decode_threads: int = 0
    # Trackers at once (0: one per core, at most 2): a take held in memory is tracked as two halves side
    # by side (track_in_two), each on its own decoder; 1 tracks it in one piece. Deterministic either way.
    track_threads: int = 0
    # A take past IN_MEMORY_FRAMES keeps its 61 channels in a temporary file too (Animation.values a
    # DiskArray), for callers that only write them out (the extract command): 22 MB an hour less.
    channels_on_disk: bool = False


ProgressFn = Callable[[int, int], None]  # (frames done, frames expected)


# ---------------------------------------------------------------------------------------------
# Importing MediaPipe without its drawing utilities

class _DeferMediapipeSolutions:
    """A sys.meta_path finder that makes `mediapipe.python.solutions` a lazily executed module.
    `import mediapipe` (which any mediapipe.tasks import runs first) imports the legacy solutions API, whose
    drawing utilities import matplotlib.pyplot and cv2: ~0.8 s of CPU (70 % of mediapipe's import, a third
    of a one-shot localize from a video) for code dubtool never calls. With this finder the solutions
    package is imported as before but runs only when one of its attributes is first used
    (importlib.util.LazyLoader): nothing changes for code that uses it. Installed once, by import_mediapipe."""

    NAME = "mediapipe.python.solutions"

    def find_spec(self, name, path, target=None):
        if name != self.NAME:
            return None
        import importlib
        import importlib.machinery
        import importlib.util

        sys.meta_path.remove(self)
        # mediapipe/__init__ deletes these names after importing the solutions, which import them
        for sub in ("framework", "gpu", "modules", "util"):
            importlib.import_module("mediapipe." + sub)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def import_mediapipe():
    """`import mediapipe` without executing its solutions API (_DeferMediapipeSolutions); the module."""
    if "mediapipe" not in sys.modules and not any(isinstance(f, _DeferMediapipeSolutions) for f in sys.meta_path):
        sys.meta_path.insert(0, _DeferMediapipeSolutions())
    try:
        import mediapipe
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _DeferMediapipeSolutions)]
    return mediapipe


# ---------------------------------------------------------------------------------------------
# Canonical mesh and pure geometry

def _parse_canonical_mesh() -> np.ndarray:
    from .assets import bundle_member

    try:
        import_mediapipe()
        from mediapipe.tasks.cc.vision.face_geometry.proto import geometry_pipeline_metadata_pb2 as pb
    except ImportError as e:  # pragma: no cover - mediapipe layout change
        raise ModelError(f"cannot read the canonical face mesh: {e}") from None
    meta = pb.GeometryPipelineMetadata()
    meta.ParseFromString(bundle_member("geometry_pipeline_metadata_landmarks.binarypb"))
    v = np.asarray(meta.canonical_mesh.vertex_buffer, np.float64).reshape(-1, 5)[:, :3]  # x y z u v
    if v.shape != (468, 3):
        raise ModelError(f"canonical face mesh has {v.shape[0]} vertices, expected 468")
    return v


@lru_cache(maxsize=1)
def canonical_neutral() -> np.ndarray:
    """(468, 3) canonical face mesh (cm, x = subject's left, y up, z out of the face): the rig's
    neutral when dubtool.rig is available, else parsed from the tracker bundle."""
    try:
        from .rig import load_rig
    except ImportError:
        return _parse_canonical_mesh()
    return np.asarray(load_rig().neutral, np.float64)[:468]


def to_metric_camera(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised MediaPipe landmarks (..., 3) -> pixel-unit points in a right-handed frame with
    y up and z toward the camera (so no mirror is needed to fit the canonical mesh)."""
    p = np.empty_like(landmarks, dtype=np.float64)
    p[..., 0] = landmarks[..., 0] * width
    p[..., 1] = -landmarks[..., 1] * height
    p[..., 2] = -landmarks[..., 2] * width
    return p


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched Umeyama: scale s (B,), rotation R (B,3,3), translation t (B,3) minimising
    |s R src + t - dst| for src (B,N,3), dst (N,3) (no reflection)."""
    mu_s = src.mean(axis=1, keepdims=True)
    mu_d = dst.mean(axis=0)
    a = src - mu_s
    b = dst - mu_d
    cov = np.einsum("nj,bni->bji", b, a) / src.shape[1]  # (B, 3, 3) = E[b a^T]
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones((src.shape[0], 3))
    fix[:, 2] = d
    r = np.einsum("bij,bj,bjk->bik", u, fix, vt)
    var_a = (a ** 2).sum(axis=(1, 2)) / src.shape[1]
    s = (sig * fix).sum(axis=1) / np.maximum(var_a, 1e-12)
    t = mu_d - s[:, None] * np.einsum("bij,bj->bi", r, mu_s[:, 0])
    return s, r, t


def canonicalize(landmarks: np.ndarray, width: int, height: int,
                 chunk: int = 128, out=None) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (T,478,3) normalised -> (canonical (T,478,3) float32 in canonical-mesh units,
    RMS fit residual (T,) in the same units) by a similarity fit on STABLE_VERTICES.
    Works in chunks of frames so float64 temporaries stay small for long takes; `out` (e.g. a
    DiskArray) receives the canonical points instead of a new array."""
    idx = np.asarray(STABLE_VERTICES)
    ref = canonical_neutral()[idx]
    canon = np.empty(landmarks.shape, np.float32) if out is None else out
    resid = np.empty(landmarks.shape[0])
    for a in range(0, landmarks.shape[0], chunk):
        pts = to_metric_camera(landmarks[a:a + chunk], width, height)
        s, r, t = similarity_fit(pts[:, idx], ref)
        c = s[:, None, None] * np.einsum("bij,bnj->bni", r, pts) + t[:, None, :]
        resid[a:a + chunk] = np.sqrt(((c[:, idx] - ref) ** 2).sum(axis=2).mean(axis=1))
        canon[a:a + chunk] = c
    return canon, resid


def head_rotations(pose: np.ndarray) -> np.ndarray:
    """(T,4,4) canonical->camera matrices -> (T,3) yaw, pitch, roll (radians) with
    R = Ry(yaw) Rx(pitch) Rz(roll)."""
    r = pose[:, :3, :3]
    pitch = np.arcsin(np.clip(-r[:, 1, 2], -1.0, 1.0))
    yaw = np.arctan2(r[:, 0, 2], r[:, 2, 2])
    roll = np.arctan2(r[:, 1, 0], r[:, 1, 1])
    return np.stack([yaw, pitch, roll], axis=1)


def eye_rotations(canonical: np.ndarray) -> np.ndarray:
    """(T,478,3) canonical landmarks -> (T,6) LeftEye yaw/pitch/roll, RightEye yaw/pitch/roll:
    the iris centre's offset from its rest position (the midpoint of its eye corners, moved
    IRIS_REST_OUT_CM outward and IRIS_REST_UP_CM up), as an angle on the eyeball."""
    out = np.zeros((canonical.shape[0], 6), np.float32)
    # Outward is +x (the subject's left) for the left eye, -x for the right eye.
    for k, (iris, (c0, c1), outward) in enumerate(((LEFT_IRIS, LEFT_EYE_CORNERS, 1.0),
                                                    (RIGHT_IRIS, RIGHT_EYE_CORNERS, -1.0))):
        mid = 0.5 * (canonical[:, c0] + canonical[:, c1])
        off = canonical[:, iris] - mid
        out[:, 3 * k] = np.arcsin(np.clip((off[:, 0] - outward * IRIS_REST_OUT_CM) / EYEBALL_RADIUS_CM, -1, 1))
        out[:, 3 * k + 1] = np.arcsin(np.clip((IRIS_REST_UP_CM - off[:, 1]) / EYEBALL_RADIUS_CM, -1, 1))
    return out


def orthonormalize(pose: np.ndarray) -> np.ndarray:
    """Project each 4x4's rotation block back onto SO(3) (after interpolation/smoothing)."""
    out = pose.copy()
    u, _, vt = np.linalg.svd(pose[:, :3, :3])
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= d[:, None]
    out[:, :3, :3] = u @ vt
    out[:, 3, :] = (0.0, 0.0, 0.0, 1.0)
    return out


def find_gaps(found: np.ndarray) -> list[tuple[int, int]]:
    """Runs of False in `found` as [start, end) frame ranges."""
    f = np.concatenate([[True], np.asarray(found, bool), [True]])
    d = np.diff(f.astype(np.int8))
    return list(zip(np.nonzero(d == -1)[0].tolist(), np.nonzero(d == 1)[0].tolist()))


def fill_gaps(arrays: list[np.ndarray], found: np.ndarray, fps: float, max_gap_s: float) -> list[dict]:
    """Fill untracked frames in place: interior gaps shorter than `max_gap_s` are interpolated
    linearly, others hold the nearest tracked frame. Returns one dict per gap."""
    t = len(found)
    gaps = []
    for a, b in find_gaps(found):
        n = b - a
        left, right = a - 1, b
        interp = n / fps < max_gap_s and left >= 0 and right < t
        for arr in arrays:
            if interp:
                w = ((np.arange(a, b) - left) / (right - left)).reshape((-1,) + (1,) * (arr.ndim - 1))
                arr[a:b] = (1 - w) * arr[left] + w * arr[right]
            else:
                for i in range(a, b):
                    src = left if (right >= t or (left >= 0 and i - left <= right - i)) else right
                    arr[i] = arr[src]
        gaps.append({"start_frame": a, "end_frame": b, "start_s": round(a / fps, 3), "end_s": round(b / fps, 3),
                     "duration_s": round(n / fps, 3), "filled": "interpolated" if interp else "held"})
    return gaps


# ---------------------------------------------------------------------------------------------
# Tracker

_SILENCE_LOCK = threading.Lock()
_silence = {"depth": 0, "saved": -1}  # fd 2's original, while any thread is inside _native_stderr_silenced


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ side logs GPU/XNNPACK notices straight to fd 2 at start-up; keep them out of
    the user's terminal (Python exceptions still propagate). Safe from several threads at once (two
    trackers warm up together): the first to enter redirects fd 2, the last to leave restores it."""
    if os.environ.get("DUBTOOL_DEBUG"):
        yield
        return
    with _SILENCE_LOCK:
        if _silence["depth"] == 0:
            sys.stderr.flush()
            _silence["saved"] = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _silence["depth"] += 1
    try:
        yield
    finally:
        with _SILENCE_LOCK:
            _silence["depth"] -= 1
            if _silence["depth"] == 0:
                os.dup2(_silence["saved"], 2)
                os.close(_silence["saved"])
                _silence["saved"] = -1


_BLEND_INDEX = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}


class FaceTracker:
    """MediaPipe FaceLandmarker in VIDEO mode (tracking between frames), one face, local model file."""

    def __init__(self) -> None:
        from .assets import face_landmarker_path

        model = face_landmarker_path()
        with _native_stderr_silenced():
            mp = import_mediapipe()
            from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model)), running_mode=vision.RunningMode.VIDEO,
            num_faces=1, output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        with _native_stderr_silenced():
            self._landmarker = vision.FaceLandmarker.create_from_options(opts)
        self._warm = False
        self.seconds = 0.0  # spent in track()

    def track(self, rgb: np.ndarray, timestamp_ms: int):
        """-> (landmarks (478,3) normalised, blendshapes (52,) by ARKit name, pose (4,4)) or None."""
        t0 = time.perf_counter()
        try:
            return self._track(rgb, timestamp_ms)
        finally:
            self.seconds += time.perf_counter() - t0

    def _track(self, rgb: np.ndarray, timestamp_ms: int):
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if not self._warm:  # the first inference logs feedback-tensor notices
            with _native_stderr_silenced():
                res = self._landmarker.detect_for_video(image, timestamp_ms)
            self._warm = True
        else:
            res = self._landmarker.detect_for_video(image, timestamp_ms)
        if not res.face_landmarks:
            return None
        lm = np.array([(p.x, p.y, p.z) for p in res.face_landmarks[0]], np.float32)
        if lm.shape[0] != NUM_LANDMARKS:
            return None
        bs = np.zeros(NUM_BLENDSHAPES, np.float32)  # tongueOut is not in MediaPipe's model: stays 0
        if res.face_blendshapes:
            for c in res.face_blendshapes[0]:
                i = _BLEND_INDEX.get(c.category_name)
                if i is not None:
                    bs[i] = c.score
        pose = np.asarray(res.facial_transformation_matrixes[0], np.float64) if res.facial_transformation_matrixes \
            else np.eye(4)
        return lm, bs, pose

    def close(self) -> None:
        self._landmarker.close()


# ---------------------------------------------------------------------------------------------
# The job

# Takes longer than this many frames keep their landmarks, blendshapes and poses in temporary files
# (diskarray.DiskArray) and are post-processed block by block: flat memory for an hour of video. Shorter
# ones stay in memory (the same numbers either way: tests/test_streaming.py).
IN_MEMORY_FRAMES = 2 * 60 * 30
POST_BLOCK_FRAMES = 256  # frames per block of the post-processing of a take on disk (~1.5 MB of landmarks)


class _FrameBuffers:
    """The tracker's per-frame results: in arrays grown by half when the video runs past its probed
    length, or (`on_disk`) appended to temporary files a batch of frames at a time."""

    BATCH = 256

    def __init__(self, capacity: int, on_disk: bool = False) -> None:
        self.n = 0
        self.on_disk = on_disk
        if on_disk:
            from .diskarray import DiskArray

            self._disk = [DiskArray((0, NUM_LANDMARKS, 3), np.float32, prefix="dubtool-landmarks-"),
                          DiskArray((0, NUM_BLENDSHAPES), np.float32, prefix="dubtool-blend-"),
                          DiskArray((0, 4, 4), np.float64, prefix="dubtool-pose-")]
            self._found = np.zeros(max(16, capacity), bool)
            self._batch_alloc()
        else:
            self._alloc(max(16, capacity))

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "landmarks", None)
        lm, bs = np.zeros((capacity, NUM_LANDMARKS, 3), np.float32), np.zeros((capacity, NUM_BLENDSHAPES), np.float32)
        pose, found = np.tile(np.eye(4), (capacity, 1, 1)), np.zeros(capacity, bool)
        if old is not None:
            lm[:self.n], bs[:self.n], pose[:self.n], found[:self.n] = (self.landmarks[:self.n], self.blend[:self.n],
                                                                      self.pose[:self.n], self.found[:self.n])
        self.landmarks, self.blend, self.pose, self.found = lm, bs, pose, found

    def _batch_alloc(self) -> None:
        k = self.BATCH
        self._batch = [np.zeros((k, NUM_LANDMARKS, 3), np.float32), np.zeros((k, NUM_BLENDSHAPES), np.float32),
                       np.tile(np.eye(4), (k, 1, 1))]
        self._batch_start, self._batch_n = self.n, 0

    def _flush(self) -> None:
        for disk, part in zip(self._disk, self._batch):
            disk.shape = (self.n,) + disk.shape[1:]
            disk.write(self._batch_start, part[:self._batch_n])
        self._batch_alloc()

    def add(self, result) -> None:
        if not self.on_disk:
            if self.n == len(self.found):
                self._alloc(len(self.found) + len(self.found) // 2)
            if result is not None:
                self.landmarks[self.n], self.blend[self.n], self.pose[self.n] = result
                self.found[self.n] = True
            self.n += 1
            return
        if self.n == len(self._found):
            self._found = np.concatenate([self._found, np.zeros(len(self._found) // 2, bool)])
        if result is not None:
            for part, value in zip(self._batch, result):
                part[self._batch_n] = value
            self._found[self.n] = True
        self.n += 1
        self._batch_n += 1
        if self._batch_n == self.BATCH:
            self._flush()

    def arrays(self):
        """(landmarks, blendshapes, poses, found) of the frames added: views, no copy (DiskArrays on disk)."""
        n = self.n
        if self.on_disk:
            if self._batch_n:
                self._flush()
            return (*self._disk, self._found[:n])
        return self.landmarks[:n], self.blend[:n], self.pose[:n], self.found[:n]


def _by_blocks(fn, arrays, n: int, block: int):
    """fn(*(rows a..b-1 of each array)) for consecutive blocks of frames; yields (a, result)."""
    for a in range(0, n, block):
        b = min(n, a + block)
        yield a, fn(*(arr[a:b] for arr in arrays))


def _frames_like(arr, dtype, on_disk: bool, prefix: str):
    from .diskarray import frames_array

    return frames_array(tuple(arr.shape), dtype, on_disk, prefix)


def _orthonormalize_all(pose, on_disk: bool):
    """orthonormalize of every frame: at once in memory, block by block in place on disk."""
    if not on_disk:
        return orthonormalize(pose)
    for a, p in _by_blocks(orthonormalize, [pose], len(pose), POST_BLOCK_FRAMES):
        pose[a:a + len(p)] = p
    return pose


def _smooth_on_disk(arr, fps: float, cfg: OneEuroConfig, scale: float, clip: tuple[float, float] | None = None) -> None:
    """one_euro_zero_phase of a DiskArray in place (optionally clipped), block by block."""
    def write(a, v):
        arr[a:a + len(v)] = v if clip is None else np.clip(v, *clip)

    one_euro_zero_phase_blocks(lambda a, b: arr[a:b], write, len(arr), arr.shape[1:], fps, cfg, scale,
                               POST_BLOCK_FRAMES)


def _timestamp_ms(i: int, fps: float) -> int:
    """MediaPipe VIDEO mode's timestamp of frame i (increasing, per tracker)."""
    return int(round(i * 1000.0 / fps))


SPLIT_WARMUP_FRAMES = 12  # the second half's tracker starts this many frames early; their results are dropped
MIN_SPLIT_FRAMES = 48  # takes shorter than this are tracked in one piece


def track_threads(asked: int) -> int:
    """Trackers for ExtractOptions.track_threads (0: one per core, at most 2; MediaPipe itself runs one
    thread per tracker and releases the GIL while it infers)."""
    if asked < 0:
        raise InputError(f"track threads must be >= 0, got {asked}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return asked or max(1, min(2, cores))


def track_in_two(frames_from, fps: float, tracker, make_tracker, n: int):
    """Each frame's `FaceTracker.track` result, in frame order, the take tracked as two halves at once:
    `tracker` the first half (a little more), a second one (`make_tracker()`, made, used and closed in a thread,
    on its own decoder: `frames_from()` makes a fresh frame iterator of the whole take) the rest,
    starting SPLIT_WARMUP_FRAMES early so its tracking and MediaPipe's landmark smoothing have settled
    where its results are kept. The second half's results wait in memory (a few KB a frame: callers
    split only takes held in memory). The second tracker's seconds are added to `tracker.seconds`."""
    import itertools

    h = min(n, (n + 2 * SPLIT_WARMUP_FRAMES) // 2)  # the second tracker also makes itself and tracks the warm-up
    start = max(0, h - SPLIT_WARMUP_FRAMES)
    second: list = []
    failed: list = []
    seconds: list = []
    stop = threading.Event()

    def track_second() -> None:
        other = frames = None
        try:
            other = make_tracker()
            frames = frames_from()
            for i, frame in enumerate(itertools.islice(frames, start, None), start):
                if stop.is_set():
                    return
                r = other.track(frame, _timestamp_ms(i, fps))
                if i >= h:
                    second.append(r)
        except BaseException as e:  # raised in the caller's thread below
            failed.append(e)
        finally:
            if frames is not None:
                frames.close()
            if other is not None:
                other.close()
                seconds.append(other.seconds)

    worker = threading.Thread(target=track_second, daemon=True, name="dubtool-track-2")
    worker.start()
    frames = frames_from()
    try:
        count = 0
        for i, frame in enumerate(itertools.islice(frames, h)):
            yield tracker.track(frame, _timestamp_ms(i, fps))
            count += 1
        worker.join()
        if failed:
            raise failed[0]
        if count == h:  # a take shorter than probed ends inside the first half: nothing follows
            yield from second
    finally:
        stop.set()
        frames.close()
        worker.join(timeout=10.0)
        tracker.seconds += sum(seconds)


def extract(video_path: str | os.PathLike, options: ExtractOptions = ExtractOptions(),
            progress: ProgressFn | None = None) -> Performance:
    """Track a video of a speaking actor into a Performance (see module docstring for conventions).
    Raises InputError for unreadable input and NoFaceError when too few frames show a face."""
    from .audio import load_audio

    t0 = time.perf_counter()
    info: VideoInfo = probe(video_path)
    fps = float(info.fps if options.fps is None else options.fps)
    if not (0 < fps <= 240):
        raise InputError(f"--fps must be in 0..240 (above 0), got {fps:g}")
    if max(info.width, info.height) > MAX_FRAME_SIDE:
        raise InputError(f"{info.path}: frames are {info.width}x{info.height}; extract reads at most "
                         f"{MAX_FRAME_SIDE} pixels a side (scale the video down first)")
    if info.duration_s * fps > MAX_FRAMES:
        raise InputError(f"{info.path}: {info.duration_s / 60:.0f} min at {fps:g} fps is "
                         f"{info.duration_s * fps:.0f} frames; extract takes at most {MAX_FRAMES} "
                         f"(2 h at 30 fps) in one go: cut the take into parts (ffmpeg -ss START -t LENGTH)")
    size = scaled_size(info.width, info.height, options.max_track_width)

    # The audio decodes (in its own ffmpeg) while the frames are tracked.
    pool = ThreadPoolExecutor(max_workers=1)
    audio_job = pool.submit(load_audio, info.path, what="video file", windowed=True) if info.has_audio else None
    pool.shutdown(wait=False)

    expected = max(1, int(round(info.duration_s * fps))) if info.duration_s else 0
    # Per-frame results go straight into preallocated arrays (no list of small arrays plus a stacked
    # copy): a frame costs its 478 landmarks once. Untracked frames stay zero.
    buf = _FrameBuffers(expected + 2, on_disk=expected > IN_MEMORY_FRAMES)
    split = MIN_SPLIT_FRAMES <= expected and not buf.on_disk and track_threads(options.track_threads) > 1

    def frames_from():
        return iter_frames(info.path, fps=fps, size=size, threads=options.decode_threads)

    tracker = FaceTracker()
    try:
        results = (track_in_two(frames_from, fps, tracker, FaceTracker, expected) if split else
                   (tracker.track(f, _timestamp_ms(i, fps)) for i, f in enumerate(frames_from())))
        for i, r in enumerate(results):
            buf.add(r)
            if progress is not None:
                progress(i + 1, max(expected, i + 1))
        results.close()
    finally:
        tracker.close()
    t_decode_track = time.perf_counter() - t0
    t_track = tracker.seconds  # of both trackers when split (they overlap in time)

    landmarks, blend, pose, face_found = buf.arrays()
    on_disk = buf.on_disk
    del buf
    n = len(face_found)
    ratio = float(face_found.mean()) if n else 0.0
    if n == 0 or ratio < options.min_face_ratio:
        raise NoFaceError(f"{info.path}: a face was found in {int(face_found.sum())} of {n} frames "
                          f"({ratio:.0%}); extract needs a visible face in at least "
                          f"{options.min_face_ratio:.0%} of the video")

    audio = None
    if audio_job is None:
        warnings.warn(f"{info.path}: no audio track; the performance will have no source audio", stacklevel=2)
    else:
        try:
            audio = audio_job.result()
        except InputError as e:
            warnings.warn(f"{e}; continuing without audio", stacklevel=2)

    ts = time.perf_counter()
    # Untracked frames hold zeros here (a degenerate but finite fit); gap filling replaces them.
    canon, resid = canonicalize(landmarks, info.width, info.height,
                                out=_frames_like(landmarks, np.float32, on_disk, "dubtool-canonical-"))
    resid[~face_found] = np.inf
    confidence = np.where(face_found, np.exp(-(resid / FIT_RESIDUAL_CM) ** 2), 0.0).astype(np.float32)
    gaps = fill_gaps([landmarks, canon, blend, pose], face_found, fps, options.max_gap_s)
    pose = _orthonormalize_all(pose, on_disk)

    if options.smoothing is not None:
        cfg = options.smoothing
        # Speeds are normalised per unit so one beta fits: landmarks in image fractions, canonical
        # points in cm, weights 0..1, translations in cm.
        pose_scale = np.array([[0.1] * 3 + [0.5]] * 3)
        if on_disk:
            _smooth_on_disk(landmarks, fps, cfg, 0.01)
            _smooth_on_disk(canon, fps, cfg, 0.3)
            _smooth_on_disk(blend, fps, cfg, 0.1, clip=(0.0, 1.0))

            def write_pose(a, v):
                p = pose[a:a + len(v)]
                p[:, :3, :] = v
                pose[a:a + len(v)] = orthonormalize(p)

            one_euro_zero_phase_blocks(lambda a, b: pose[a:b][:, :3, :], write_pose, n, (3, 4), fps, cfg,
                                       pose_scale, POST_BLOCK_FRAMES)
        else:
            one_euro_zero_phase(landmarks, fps, cfg, scale=0.01, out=landmarks)
            one_euro_zero_phase(canon, fps, cfg, scale=0.3, out=canon)
            blend = np.clip(one_euro_zero_phase(blend, fps, cfg, scale=0.1), 0.0, 1.0)
            pose_s = pose.copy()
            pose_s[:, :3, :] = one_euro_zero_phase(pose[:, :3, :], fps, cfg, scale=pose_scale)
            pose = orthonormalize(pose_s)

    from .diskarray import frames_array

    values = frames_array((n, NUM_CHANNELS), np.float32, on_disk and options.channels_on_disk, "dubtool-channels-")
    head, eyes = index("HeadYaw"), index("LeftEyeYaw")
    for a in range(0, n, POST_BLOCK_FRAMES):  # each block's rows whole (a DiskArray is written by rows)
        b = min(n, a + POST_BLOCK_FRAMES)
        block = np.zeros((b - a, NUM_CHANNELS), np.float32)
        block[:, :NUM_BLENDSHAPES] = blend[a:b]
        block[:, head:head + 3] = head_rotations(pose[a:b])
        block[:, eyes:eyes + 6] = eye_rotations(canon[a:b])
        values[a:b] = block
    if on_disk:  # the .perf keeps head poses in float32
        pose32 = _frames_like(pose, np.float32, True, "dubtool-pose32-")
        for a, v in _by_blocks(lambda p: p, [pose], n, POST_BLOCK_FRAMES):
            pose32[a:a + len(v)] = v
        pose.close()
        pose = pose32
    t_post = time.perf_counter() - ts

    long_gaps = [g for g in gaps if g["filled"] == "held"]
    meta = {
        "fps": fps, "source_fps": info.fps, "width": info.width, "height": info.height,
        "track_width": size[0], "track_height": size[1], "rotation": info.rotation,
        "duration_s": round(n / fps, 3), "source": os.path.abspath(info.path),
        "tool": "dubtool extract", "tool_version": __version__, "tracker": "mediapipe FaceLandmarker 0.10.21",
        "face_found_ratio": round(ratio, 4), "gaps": gaps, "long_gaps": len(long_gaps),
        "has_audio": audio is not None,
        "smoothing": asdict(options.smoothing) if options.smoothing is not None else None,
        "conventions": "HeadYaw+ = subject turns to their left; HeadPitch+ = looks down; "
                       "HeadRoll+ = tilts to their right shoulder; R = Ry(yaw) Rx(pitch) Rz(roll)",
        "timings_s": {"decode_track": round(t_decode_track, 3), "track": round(t_track, 3),
                      "post": round(t_post, 3), "total": round(time.perf_counter() - t0, 3)},
    }
    start_tc = None
    if info.timecode:
        from .livelink import start_timecode_s

        try:  # the tag counts frames at the video's own rate
            start_tc = start_timecode_s(info.timecode, info.fps)
        except InputError:
            warnings.warn(f"{info.path}: ignored unreadable timecode tag {info.timecode!r}")
        meta["source_timecode"] = info.timecode
    anim = Animation(values, fps, start_tc, {"source": os.path.abspath(info.path)})
    return Performance(landmarks, canon, pose if on_disk else pose.astype(np.float32), anim, face_found, confidence,
                       audio, meta)


def summary(perf: Performance, outputs: dict[str, str]) -> dict:
    """Script-friendly summary of an extraction (what `--json` prints)."""
    m = perf.meta
    return {"frames": perf.num_frames, "fps": perf.fps, "duration_s": round(perf.duration_s, 3),
            "width": m.get("width"), "height": m.get("height"), "face_found_ratio": m.get("face_found_ratio"),
            "gaps": m.get("gaps", []), "long_gaps": m.get("long_gaps", 0), "has_audio": perf.audio is not None,
            "timings_s": m.get("timings_s", {}),
            "fps_processed": round(perf.num_frames / max(m.get("timings_s", {}).get("total", 0.0), 1e-9), 1),
            "outputs": outputs}

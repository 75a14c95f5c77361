"""Test videos with a real face: scikit-image's `astronaut` photo (Eileen Collins, public domain)
animated by image warps with known parameters, encoded with ffmpeg. Used by the tests and by
examples/make_example.py.

The face is located once by running the landmarker on the still (no hard-coded coordinates); its
landmarks drive every edit:
  jaw    0..1  lower lip and chin slide down, a dark inner mouth opens between the lips
  blink  0..1  upper lid (skin colour + lash line) closes over the iris, per eye
  brow   0..1  brows and the skin above them lift
  yaw/pitch/roll (radians, dubtool's convention: yaw+ = subject turns to their left, pitch+ = looks
         down, roll+ = their left ear goes up): a 2.5-D warp that moves each pixel by its depth from
         the tracked z, so the nose shifts against the face outline as in a real head turn.
Needs scikit-image (the `dev` extra) and the face tracker model.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from .audio import Audio, ffmpeg_binary, rms_envelope, write_wav
from .errors import DependencyError
from .fileio import atomic_path

MOUTH_INNER_TOP, MOUTH_INNER_BOTTOM, MOUTH_CORNERS, CHIN = 13, 14, (61, 291), 152
RIGHT_EYE_RING = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE_RING = (362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382)
RIGHT_BROW, LEFT_BROW = (70, 63, 105, 66, 107), (300, 293, 334, 296, 336)


@dataclass(frozen=True)
class StillFace:
    image: np.ndarray  # (H, W, 3) uint8
    points: np.ndarray  # (478, 3) pixel x, y and depth toward the camera (pixels)
    depth: np.ndarray  # (H, W) float32 depth toward the camera, 0 at the face outline

    @property
    def box(self) -> tuple[float, float, float, float]:
        x, y = self.points[:468, 0], self.points[:468, 1]
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())


@lru_cache(maxsize=1)
def astronaut_face() -> StillFace:
    """The astronaut still, its tracked landmarks (pixels) and a dense depth map of the face."""
    try:
        from skimage import data
    except ImportError:
        raise DependencyError("test media need scikit-image: pip install scikit-image "
                              "(or `pip install -e .[dev]`)") from None
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    from scipy.interpolate import griddata
    from scipy.ndimage import gaussian_filter

    from .assets import face_landmarker_path

    img = np.ascontiguousarray(data.astronaut())
    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(face_landmarker_path())),
                                        running_mode=vision.RunningMode.IMAGE, num_faces=1)
    with vision.FaceLandmarker.create_from_options(opts) as lm:
        res = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=img))
    if not res.face_landmarks:  # pragma: no cover - the photo always has a face
        raise RuntimeError("no face found in skimage.data.astronaut()")
    h, w = img.shape[:2]
    pts = np.array([(p.x * w, p.y * h, -p.z * w) for p in res.face_landmarks[0]], np.float64)
    # Depth relative to the face outline (the silhouette moves least in a turn).
    from scipy.spatial import ConvexHull

    hull = ConvexHull(pts[:468, :2])
    pts[:, 2] -= np.median(pts[hull.vertices, 2])
    yy, xx = np.mgrid[0:h, 0:w]
    depth = griddata(pts[:468, :2], pts[:468, 2], (xx, yy), method="linear", fill_value=0.0)
    depth = gaussian_filter(np.maximum(depth, 0.0), 3.0).astype(np.float32)
    return StillFace(img, pts, depth)


def _smooth_bump(d: np.ndarray) -> np.ndarray:
    """1 at d<=0 falling smoothly to 0 at d>=1."""
    x = np.clip(d, 0.0, 1.0)
    return (1 - x * x * (3 - 2 * x)).astype(np.float32)


def _ring_curves(ring_pts: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid y at each x for an eye ring (corner, upper lid..., corner, lower lid...)."""
    upper = ring_pts[0:9]
    lower = np.concatenate([ring_pts[8:], ring_pts[:1]])
    ui = np.argsort(upper[:, 0])
    li = np.argsort(lower[:, 0])
    return np.interp(xs, upper[ui, 0], upper[ui, 1]), np.interp(xs, lower[li, 0], lower[li, 1])


def _close_eye(img: np.ndarray, face: StillFace, ring: tuple[int, ...], amount: float) -> None:
    import cv2

    if amount <= 0.02:
        return
    p = face.points[list(ring), :2]
    x0, x1 = p[:, 0].min() - 2, p[:, 0].max() + 2
    xs = np.arange(int(np.floor(x0)), int(np.ceil(x1)) + 1)
    up, lo = _ring_curves(p, np.clip(xs, p[:, 0].min(), p[:, 0].max()))
    up = up - 2.5  # cover lashes and the white above the iris
    lo = lo + 1.0
    lid = up + amount * (lo - up)
    eye_h = float(np.max(lo - up))
    # Skin colour: the median of a band between the eye and the brow.
    band_y0 = int(np.min(up) - 1.6 * eye_h)
    band_y1 = int(np.min(up) - 0.6 * eye_h)
    band = img[max(band_y0, 0):max(band_y1, 1), int(x0):int(x1)]
    skin = np.median(band.reshape(-1, 3), axis=0) if band.size else np.array([200, 160, 140])
    poly = np.concatenate([np.stack([xs, up], 1), np.stack([xs[::-1], lid[::-1]], 1)]).astype(np.int32)
    cv2.fillPoly(img, [poly], tuple(int(c) for c in skin), lineType=cv2.LINE_AA)
    lash = np.stack([xs, lid], 1).astype(np.int32)
    cv2.polylines(img, [lash], False, (40, 25, 20), thickness=max(1, int(round(eye_h * 0.18))),
                  lineType=cv2.LINE_AA)


def edit_face(face: StillFace, jaw: float = 0.0, blink_left: float = 0.0, blink_right: float = 0.0,
              brow: float = 0.0) -> np.ndarray:
    """The still with the mouth opened, eyes closed and brows raised by the given amounts (0..1)."""
    import cv2

    img = face.image
    h, w = img.shape[:2]
    pts = face.points
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx.copy(), yy.copy()
    x0, y0, x1, y1 = face.box
    face_h = y1 - y0

    # Mouth: everything below the lip line inside the jaw region slides down by `gap`.
    ml, mr = pts[MOUTH_CORNERS[0], :2], pts[MOUTH_CORNERS[1], :2]
    mouth_w = float(np.hypot(*(mr - ml)))
    lip_y = 0.5 * (pts[MOUTH_INNER_TOP, 1] + pts[MOUTH_INNER_BOTTOM, 1])
    mcx = 0.5 * (ml[0] + mr[0])
    chin_y = pts[CHIN, 1]
    gap = float(np.clip(jaw, 0, 1)) * 0.42 * mouth_w
    if gap > 0.3:
        below = yy - lip_y
        fall_y = np.where(below < 0, 0.0, _smooth_bump((below - (chin_y - lip_y)) / (0.35 * face_h)))
        fall_x = _smooth_bump((np.abs(xx - mcx) - 0.55 * mouth_w) / (0.55 * mouth_w))
        shift = gap * fall_y * fall_x
        # just below the lip line the source is pulled from the line itself (lip edge stretches)
        map_y = map_y - np.minimum(shift, np.maximum(below, 0))
    # Brows: lift the brow band.
    lift = float(np.clip(brow, 0, 1)) * 0.07 * face_h
    if lift > 0.2:
        bp = pts[list(RIGHT_BROW + LEFT_BROW), :2]
        brow_y = bp[:, 1].mean()
        eye_top = min(pts[159, 1], pts[386, 1])
        d_down = (yy - brow_y) / max(eye_top - brow_y, 1.0)
        d_up = (brow_y - yy) / (0.35 * face_h)
        fall = np.where(yy >= brow_y, _smooth_bump(d_down), _smooth_bump(d_up))
        fall *= _smooth_bump((np.abs(xx - bp[:, 0].mean()) - 0.5 * (bp[:, 0].max() - bp[:, 0].min()))
                             / (0.15 * face_h))
        map_y = map_y + lift * fall
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if gap > 0.3:
        cv2.ellipse(out, (int(round(mcx)), int(round(lip_y + gap / 2))),
                    (int(round(0.40 * mouth_w)), max(1, int(round(gap / 2)))), 0, 0, 360, (45, 12, 15), -1,
                    lineType=cv2.LINE_AA)
    _close_eye(out, face, LEFT_EYE_RING, float(np.clip(blink_left, 0, 1)))
    _close_eye(out, face, RIGHT_EYE_RING, float(np.clip(blink_right, 0, 1)))
    return out


def head_warp(img: np.ndarray, face: StillFace, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Turn the head by a 2.5-D warp: each pixel moves by its depth (nose more than outline), then the
    image rotates about the face centre for roll."""
    import cv2

    if abs(yaw) < 1e-4 and abs(pitch) < 1e-4 and abs(roll) < 1e-4:
        return img
    h, w = img.shape[:2]
    x0, y0, x1, y1 = face.box
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Roll: rotate about the face centre; roll+ lifts the subject's left (image right) side.
    c, s = np.cos(roll), np.sin(roll)
    dx, dy = xx - cx, yy - cy
    rx = cx + c * dx - s * dy
    ry = cy + s * dx + c * dy
    # Yaw/pitch: depth parallax (approximate inverse: depth sampled at the destination pixel).
    d = face.depth
    src_x = rx - d * np.sin(yaw) - (rx - cx) * (np.cos(yaw) - 1)
    src_y = ry - d * np.sin(pitch) - (ry - cy) * (np.cos(pitch) - 1)
    return cv2.remap(img, src_x.astype(np.float32), src_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def crop_box(face: StillFace, size: tuple[int, int], face_fraction: float) -> tuple[int, int, int, int]:
    """A crop of the still with the output aspect in which the face spans `face_fraction` of the height."""
    x0, y0, x1, y1 = face.box
    H, W = face.image.shape[:2]
    ch = min(H, (y1 - y0) / face_fraction)
    cw = min(W, ch * size[0] / size[1])
    ch = cw * size[1] / size[0]
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1) + 0.05 * (y1 - y0)
    left = int(np.clip(cx - cw / 2, 0, W - cw))
    top = int(np.clip(cy - ch / 2, 0, H - ch))
    return left, top, int(round(cw)), int(round(ch))


def render_frame(face: StillFace, size: tuple[int, int] = (320, 240), face_fraction: float = 0.45,
                 jaw: float = 0.0, blink_left: float = 0.0, blink_right: float = 0.0, brow: float = 0.0,
                 yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """One (h, w, 3) uint8 frame of the animated astronaut."""
    import cv2

    img = head_warp(edit_face(face, jaw, blink_left, blink_right, brow), face, yaw, pitch, roll)
    left, top, cw, ch = crop_box(face, size, face_fraction)
    return cv2.resize(img[top:top + ch, left:left + cw], size, interpolation=cv2.INTER_AREA)


def face_box_in_frame(face: StillFace, size: tuple[int, int], face_fraction: float = 0.45) -> tuple[float, ...]:
    """The still's face box (x0, y0, x1, y1), normalised to a frame made by render_frame (no head motion)."""
    left, top, cw, ch = crop_box(face, size, face_fraction)
    x0, y0, x1, y1 = face.box
    return ((x0 - left) / cw, (y0 - top) / ch, (x1 - left) / cw, (y1 - top) / ch)


@dataclass(frozen=True)
class Motion:
    """Per-frame animation curves for render_frame (arrays of equal length; missing = zeros)."""

    jaw: np.ndarray | None = None
    blink_left: np.ndarray | None = None
    blink_right: np.ndarray | None = None
    brow: np.ndarray | None = None
    yaw: np.ndarray | None = None
    pitch: np.ndarray | None = None
    roll: np.ndarray | None = None

    def frame(self, i: int) -> dict:
        return {k: float(getattr(self, k)[i]) for k in ("jaw", "blink_left", "blink_right", "brow", "yaw", "pitch",
                                                        "roll") if getattr(self, k) is not None}


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, audio: Audio | None = None,
                crf: int = 28, extra_args: tuple[str, ...] = ()) -> Path:
    """Encode RGB frames (and optional audio) to H.264/AAC mp4, streaming, atomically."""
    path = Path(path)
    it = iter(frames)
    first = next(it)
    h, w = first.shape[:2]
    with tempfile.TemporaryDirectory() as td, atomic_path(path) as tmp:
        cmd = [ffmpeg_binary(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{w}x{h}", "-r", f"{fps}", "-i", "-"]
        if audio is not None:
            wav = write_wav(audio, Path(td) / "a.wav")
            cmd += ["-i", str(wav), "-c:a", "aac", "-b:a", "48k"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                *extra_args, "-movflags", "+faststart", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.stdin.write(np.ascontiguousarray(first).tobytes())  # type: ignore[union-attr]
            for f in it:
                proc.stdin.write(np.ascontiguousarray(f).tobytes())  # type: ignore[union-attr]
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            err = proc.stderr.read().decode("utf-8", "replace")  # type: ignore[union-attr]
            proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {err.strip()[-300:]}")
    return path


def make_face_video(path: str | os.PathLike, motion: Motion, fps: float = 25.0, size: tuple[int, int] = (320, 240),
                    audio: Audio | None = None, blank_frames: Iterable[int] = (), face_fraction: float = 0.45,
                    crf: int = 28) -> Path:
    """Encode the animated astronaut; frames in `blank_frames` show a flat grey (an occlusion)."""
    face = astronaut_face()
    n = len(next(v for v in (motion.jaw, motion.blink_left, motion.blink_right, motion.brow, motion.yaw,
                             motion.pitch, motion.roll) if v is not None))
    blank = set(blank_frames)

    def gen():
        for i in range(n):
            if i in blank:
                yield np.full((size[1], size[0], 3), 128, np.uint8)
            else:
                yield render_frame(face, size, face_fraction, **motion.frame(i))

    return write_video(path, gen(), fps, audio, crf)


def make_noise_video(path: str | os.PathLike, seconds: float = 1.0, fps: float = 25.0,
                     size: tuple[int, int] = (160, 120), audio: Audio | None = None, seed: int = 0) -> Path:
    """A faceless video: a drifting colour gradient with noise."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * fps)))
    yy, xx = np.mgrid[0:size[1], 0:size[0]]

    def gen():
        for i in range(n):
            base = np.stack([(xx + 3 * i) % 256, (yy * 2 + i) % 256, np.full_like(xx, 90)], -1)
            yield np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)

    return write_video(path, gen(), fps, audio)


def tone_audio(seconds: float, sample_rate: int = 16000, freq: float = 180.0, seed: int = 0) -> Audio:
    """A voiced-speech-like buzz with syllable-rate amplitude modulation (for tracks that need audio)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t)
    x = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6)) * env * 0.2
    return Audio((x + rng.normal(0, 0.003, t.size)).astype(np.float32), sample_rate)


def jaw_from_audio(audio: Audio, fps: float, num_frames: int) -> np.ndarray:
    """Mouth opening 0..1 per frame following the speech envelope (for lip motion synced to audio)."""
    env = rms_envelope(audio.samples, audio.sample_rate, fps)
    env = np.pad(env, (0, max(0, num_frames - env.size)))[:num_frames]
    ref = float(np.percentile(env, 95)) or 1.0
    db = 20 * np.log10(np.maximum(env / ref, 1e-4))
    return np.clip((db + 30) / 30, 0, 1).astype(np.float32)

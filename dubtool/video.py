"""Video in: ffprobe metadata and streaming RGB frame decode through an ffmpeg pipe.

Frames come out at a constant frame rate (ffmpeg's fps filter resamples variable-frame-rate
input), already rotated by the container's rotation metadata (ffmpeg autorotates), optionally
downscaled. A reader thread keeps a few frames decoded ahead, so memory stays bounded by the
queue, not by the length of the video. Used by `extract` and by the renderer's `--compare`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from .audio import ffmpeg_binary, ffmpeg_path
from .errors import DependencyError, InputError
from .fileio import require_file


@dataclass(frozen=True)
class VideoInfo:
    """What ffprobe says about a file's first video stream. width/height are after rotation."""

    path: str
    width: int
    height: int
    fps: float
    duration_s: float
    num_frames: int  # estimate: duration * fps
    rotation: int  # degrees from the container's display matrix / rotate tag
    codec: str
    has_audio: bool
    timecode: str | None = None  # the container's start timecode tag (HH:MM:SS:FF), if any


def ffprobe_binary() -> str:
    exe = shutil.which("ffprobe")
    if not exe:
        raise DependencyError("ffprobe not found; install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg)")
    return exe


def _rate(text: str | None) -> float:
    try:
        f = Fraction(text or "0/0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(f) if f > 0 else 0.0


def _rotation(stream: dict) -> int:
    rot = stream.get("tags", {}).get("rotate")
    for sd in stream.get("side_data_list", []) or []:
        if "rotation" in sd:
            rot = sd["rotation"]
    try:
        return int(round(float(rot or 0))) % 360
    except ValueError:
        return 0


def _timecode_tag(info: dict) -> str | None:
    # QuickTime/MXF keep it on the format or on a timecode (tmcd) data stream; MP4 on the video stream.
    for tags in [info.get("format", {}).get("tags", {})] + [s.get("tags", {}) for s in info.get("streams", [])]:
        tc = (tags or {}).get("timecode")
        if tc:
            return str(tc)
    return None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Probe a video file; InputError for missing, corrupt, or audio-only files."""
    p = require_file(path, "video file")
    cmd = [ffprobe_binary(), "-v", "error", "-print_format", "json", "-show_streams", "-show_format", ffmpeg_path(p)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        raise InputError(f"{p}: not a readable video ({lines[-1] if lines else 'ffprobe failed'})")
    info = json.loads(r.stdout or "{}")
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if not video:
        if has_audio:
            raise InputError(f"{p}: has no video stream (audio-only file?); extract needs a video of the actor")
        raise InputError(f"{p}: no video stream found")
    v = video[0]
    w, h = int(v.get("width") or 0), int(v.get("height") or 0)
    if w <= 0 or h <= 0:
        raise InputError(f"{p}: video stream has no frame size (corrupt file?)")
    rot = _rotation(v)
    if rot in (90, 270):
        w, h = h, w
    fps = _rate(v.get("avg_frame_rate")) or _rate(v.get("r_frame_rate"))
    if not (1.0 <= fps <= 1000.0):
        fps = 30.0  # still image or broken timing: decode at a common rate
    dur = 0.0
    for src in (v.get("duration"), info.get("format", {}).get("duration")):
        try:
            dur = float(src)
            break
        except (TypeError, ValueError):
            continue
    return VideoInfo(str(p), w, h, fps, dur, int(round(dur * fps)), rot, str(v.get("codec_name", "?")), has_audio,
                     _timecode_tag(info))


def scaled_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    """(w, h) after fitting into `max_width` (aspect kept, even sizes for codecs)."""
    if not max_width or width <= max_width:
        return width, height
    s = max_width / width
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def iter_frames(path: str | os.PathLike, fps: float | None = None, size: tuple[int, int] | None = None,
                threads: int = 0, queue_frames: int = 8) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames at a constant `fps` (None: the source's average rate),
    scaled to `size` (w, h) if given. The last ffmpeg error is raised as InputError if decoding fails
    before any frame comes out."""
    info = probe(path)
    out_fps = fps or info.fps
    w, h = size or (info.width, info.height)
    vf = f"fps={out_fps:.6f}"
    if (w, h) != (info.width, info.height):
        vf += f",scale={w}:{h}:flags=area"
    cmd = [ffmpeg_binary(), "-nostdin", "-v", "error", "-threads", str(threads), "-i", ffmpeg_path(info.path),
           "-map", "0:v:0", "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    nbytes = w * h * 3
    q: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
    stop = threading.Event()
    stderr_chunks: list[bytes] = []

    def drain_stderr() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            if len(stderr_chunks) < 50:
                stderr_chunks.append(line)

    def reader() -> None:
        try:
            while not stop.is_set():
                buf = bytearray(nbytes)
                view = memoryview(buf)
                got = 0
                while got < nbytes:
                    n = proc.stdout.readinto(view[got:])  # type: ignore[union-attr]
                    if not n:
                        break
                    got += n
                if got < nbytes:
                    break
                q.put(np.frombuffer(buf, np.uint8).reshape(h, w, 3))
        finally:
            q.put(None)

    t_err = threading.Thread(target=drain_stderr, daemon=True)
    t_read = threading.Thread(target=reader, daemon=True)
    t_err.start()
    t_read.start()
    count = 0
    stop_early = [True]  # cleared when the stream ends by itself (not when the consumer stops)
    try:
        while True:
            frame = q.get()
            if frame is None:
                stop_early[0] = False
                break
            count += 1
            yield frame
    finally:
        stop.set()
        while t_read.is_alive():  # unblock a reader waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t_read.join(timeout=0.05)
            if proc.poll() is None and t_read.is_alive():
                proc.kill()
        if not stop_early[0]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        elif proc.poll() is None:
            proc.kill()
        proc.wait()
        t_err.join(timeout=1.0)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    if count and not stop_early[0] and (proc.returncode != 0 or stderr_chunks):
        msg = b"".join(stderr_chunks).decode("utf-8", "replace").strip().splitlines()
        warnings.warn(f"{info.path}: decoding stopped after {count} frames "
                      f"({msg[-1].strip() if msg else 'ffmpeg error'}); the file may be truncated", stacklevel=2)
    if count == 0:
        msg = b"".join(stderr_chunks).decode("utf-8", "replace").strip().splitlines()
        raise InputError(f"{info.path}: no frames could be decoded ({msg[-1] if msg else 'empty video'})")

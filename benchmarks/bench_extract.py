"""Speed and memory of `dubtool extract` (not a test). Prints one line per figure, median of runs.

    .venv/bin/python benchmarks/bench_extract.py [--runs 3] [--long-s 120]

Each run is a fresh process (so peak RSS is that run's own): end-to-end fps = frames / wall time of
extract() (probe, audio, model start-up, decode, tracking, smoothing), tracking-only fps, peak RSS.
Videos are the astronaut test media looped to length (ffmpeg -stream_loop), H.264 + AAC.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_run(path: str, max_width: int) -> None:
    from dubtool.extract import ExtractOptions, extract

    def cpu_s() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    c, t = cpu_s(), time.perf_counter()
    perf = extract(path, ExtractOptions(max_track_width=max_width))
    wall, cpu = time.perf_counter() - t, cpu_s() - c
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": perf.num_frames, "wall_s": wall, "track_s": perf.meta["timings_s"]["track"],
                      "cpu_s": cpu, "rss_mb": rss_mb}))


def make_videos(d: Path, long_s: float) -> dict[str, Path]:
    from dubtool import testmedia as tm

    fps, n = 25.0, 100
    t = np.arange(n) / fps
    motion = tm.Motion(jaw=0.5 + 0.5 * np.sin(2 * np.pi * 3 * t), blink_left=(np.abs(t - 2) < 0.1) * 1.0,
                       blink_right=(np.abs(t - 2) < 0.1) * 1.0, yaw=0.2 * np.sin(2 * np.pi * t / 4))
    audio = tm.tone_audio(n / fps)
    out = {}
    for name, size in (("640x480", (640, 480)), ("1280x720", (1280, 720))):
        base = tm.make_face_video(d / f"base_{name}.mp4", motion, fps, size, audio=audio, face_fraction=0.4)
        for label, secs in ((name, 12.0), (f"{name}_long", long_s)):
            if label.endswith("_long") and name != "640x480":
                continue
            loops = int(np.ceil(secs / (n / fps))) - 1
            dst = d / f"{label}.mp4"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(base),
                            "-c", "copy", "-t", str(secs), str(dst)], check=True)
            out[label] = dst
    return out


def measure(path: Path, runs: int, max_width: int = 1280) -> dict:
    rows = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, __file__, "--one", str(path), "--max-width", str(max_width)],
                           capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    med = lambda k: statistics.median(x[k] for x in rows)  # noqa: E731
    return {"frames": rows[0]["frames"], "fps": rows[0]["frames"] / med("wall_s"),
            "track_fps": rows[0]["frames"] / med("track_s"), "rss_mb": med("rss_mb"),
            "cpu_ms": 1000 * med("cpu_s") / rows[0]["frames"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--long-s", type=float, default=120.0)
    ap.add_argument("--one")
    ap.add_argument("--max-width", type=int, default=1280)
    a = ap.parse_args()
    if a.one:
        one_run(a.one, a.max_width)
        return
    import os

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start "
          "(other jobs share the cores; CPU ms/frame is the load-independent figure)")
    with tempfile.TemporaryDirectory() as td:
        vids = make_videos(Path(td), a.long_s)
        for label in ("640x480", "1280x720"):
            m = measure(vids[label], a.runs)
            print(f"extract {label} 25fps {m['frames']} frames: end-to-end {m['fps']:.1f} fps "
                  f"({m['fps'] / 25:.2f}x real time), tracking {m['track_fps']:.1f} fps, CPU {m['cpu_ms']:.1f} ms/frame "
                  f"(all threads + ffmpeg), peak RSS {m['rss_mb']:.0f} MB")
        m = measure(vids["1280x720"], a.runs, max_width=640)
        print(f"extract 1280x720 --max-width 640: end-to-end {m['fps']:.1f} fps ({m['fps'] / 25:.2f}x real time), "
              f"tracking {m['track_fps']:.1f} fps, CPU {m['cpu_ms']:.1f} ms/frame, peak RSS {m['rss_mb']:.0f} MB")
        m = measure(vids["640x480_long"], 1)
        print(f"extract 640x480 long {m['frames'] / 25:.0f} s ({m['frames']} frames): end-to-end {m['fps']:.1f} fps, "
              f"peak RSS {m['rss_mb']:.0f} MB (single run)")


if __name__ == "__main__":
    main()

"""Render speed: frames per second of the face renderer alone and end to end (render + H.264
encode to mp4) at 512x512 on this machine. Prints one line per figure (median of runs)."""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dubtool.arkit import Animation, index
from dubtool.rig import load_rig
from dubtool.render import FaceRenderer, RenderOptions, render_video

FRAMES, RUNS = 300, 3


def take() -> Animation:
    t = np.arange(FRAMES) / 30.0
    v = np.zeros((FRAMES, 61), np.float32)
    v[:, index("jawOpen")] = 0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * t)
    v[:, index("eyeBlinkLeft")] = v[:, index("eyeBlinkRight")] = (t % 3 < 0.15)
    v[:, index("HeadYaw")] = 0.3 * np.sin(t)
    return Animation(v, 30.0)


def main() -> None:
    anim, rig = take(), load_rig()
    for samples in (0, 4):
        opts = RenderOptions(width=512, height=512, samples=samples)
        r = FaceRenderer(rig, opts)
        r.render(anim.values[0])
        rates = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            for row in anim.values:
                r.render(row)
            rates.append(FRAMES / (time.perf_counter() - t0))
        r.release()
        print(f"render 512x512 msaa={samples}: {statistics.median(rates):.0f} fps")
    with tempfile.TemporaryDirectory() as d:
        for samples in (0, 4):
            rates = []
            for _ in range(RUNS):
                t0 = time.perf_counter()
                render_video(anim, Path(d) / "b.mp4", options=RenderOptions(samples=samples), rig=rig)
                rates.append(FRAMES / (time.perf_counter() - t0))
            print(f"end-to-end render+encode 512x512 msaa={samples} (libx264 veryfast): {statistics.median(rates):.0f} fps")


if __name__ == "__main__":
    main()

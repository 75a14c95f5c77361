"""Speed of the evaluation metrics: scoring a 60 s line (30 fps) with and without baselines, and the
rig-posed metrics alone. Prints one line per figure (median of 5 runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dubtool import evaluate, metrics  # noqa: E402
from dubtool.arkit import NUM_CHANNELS, Animation, index  # noqa: E402
from dubtool.audio import Audio  # noqa: E402
from dubtool.phonemes import Phoneme  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py)

FPS, SECONDS, RUNS = 30.0, 60.0, 5


def line():
    rng = np.random.default_rng(0)
    n = int(SECONDS * FPS)
    phon, t = [], 0.0
    while t < SECONDS - 0.5:
        for sym, d in (("m", 0.08), ("a", 0.15), ("t", 0.07), ("e", 0.12)):
            phon.append(Phoneme(sym, t, t + d))
            t += d
    v = rng.random((n, NUM_CHANNELS)).astype(np.float32) * 0.3
    v[:, index("jawOpen")] = 0.3 + 0.3 * np.sin(np.arange(n) / 3)
    sr = 16000
    audio = Audio((rng.normal(0, 0.1, int(SECONDS * sr)) * np.repeat(rng.random(int(SECONDS * 10)), sr // 10))
                  .astype(np.float32), sr)
    return Animation(v, FPS), Animation(np.roll(v, 7, axis=0), FPS), audio, phon


def main() -> None:
    gen, src, audio, phon = line()
    metrics.default_rig()  # load once, outside the timing
    t = timed(lambda: evaluate.evaluate_line(gen, audio, phon, src), RUNS).median
    print(f"eval 60 s line, generated only: {t * 1000:.0f} ms")
    try:
        t = timed(lambda: evaluate.evaluate_line(gen, audio, phon, src, with_baselines=True), RUNS).median
        print(f"eval 60 s line + teacher and naive-copy baselines: {t * 1000:.0f} ms")
    except Exception as e:  # the teacher module may be missing
        print(f"eval 60 s line + baselines: not measured ({type(e).__name__})")
    t = timed(lambda: metrics.lip_vertex_error(gen, src), RUNS).median
    print(f"LVE 1800 frames (rig posed): {t * 1000:.1f} ms")
    t = timed(lambda: metrics.fdd(gen, src, FPS), RUNS).median
    print(f"FDD 1800 frames (rig posed): {t * 1000:.1f} ms")


if __name__ == "__main__":
    main()

"""Speed of the flow generator: a 60 s take at 30 fps with the default step count (median of 5 runs,
mel front end included), as a real-time factor; with --device cuda also batch throughput (many 60 s
takes at once). Prints one line per figure.

    python benchmarks/bench_generate.py [--model PATH] [--device cpu|cuda] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dubtool.audio import Audio  # noqa: E402
from dubtool.generate import load_model, style_context  # noqa: E402

SECONDS, RUNS = 60.0, 5


def speech_like(seconds: float, rng) -> Audio:
    """Syllable-rate amplitude-modulated harmonic noise: speech-shaped input without a synthesizer."""
    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.3 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / sr) / k for k in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, 1) * (np.sin(2 * np.pi * 0.2 * t) > -0.6)
    return Audio((0.2 * env * (voiced + 0.3 * rng.standard_normal(len(t)))).astype(np.float32), sr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    import torch

    rng = np.random.default_rng(0)
    gen = load_model(args.model, device=args.device)
    steps = args.steps or gen.sampler.steps
    audio = speech_like(SECONDS, rng)
    n = int(round(SECONDS * gen.fps))
    curves = np.zeros((n, 61), np.float32)
    curves[:, 43] = 0.3 * (np.sin(np.arange(n) / 20) > 0)
    from dubtool.keypoints import keypoints_from_curves

    try:
        kp = keypoints_from_curves(curves)
    except Exception:  # no rig on this machine: zero displacement keypoints time the same
        kp = np.zeros((n, gen.dims.n_keypoints), np.float32)
    style = style_context(curves)
    try:
        import librosa  # noqa: F401  (the mel front end's filter bank)
    except ImportError:  # a GPU box without librosa: time only the batched sampler below
        librosa = None
    times = []
    for seed in range(RUNS if librosa else 0):
        if seed == 0:
            gen.generate(audio, kp, style, steps=steps)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        gen.generate(audio, kp, style, steps=steps, seed=seed)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if times:
        med = statistics.median(times)
        print(f"generate 60 s @ {gen.fps:g} fps, {steps} {gen.sampler.method} steps, {args.device} "
              f"({torch.get_num_threads()} threads): {med:.3f} s = {SECONDS / med:.0f}x real time")
    else:
        print("generate 60 s: single-take timing skipped (librosa, the mel front end, is not installed here)")
    if args.device.startswith("cuda"):
        from dubtool.audio import mel_features
        from dubtool.generate import normalize_mel

        mel = (normalize_mel(mel_features(audio.samples, audio.sample_rate, gen.fps, gen.dims.n_mels,
                                          gen.dims.audio_subframes)) if librosa
               else rng.standard_normal((n, gen.dims.mel_width)).astype(np.float32))
        m, k, s = gen.normalize_inputs(mel, kp, style)
        b = args.batch
        mb, kb, sb = m[None].expand(b, -1, -1), k[None].expand(b, -1, -1), s[None].expand(b, -1)
        guidance = gen.sampler.guidance  # the shipped default (2: an extra audio-free pass per step)
        gen.sample(mb, kb, sb, steps=steps, guidance=guidance, seed=0)
        times = []
        for seed in range(RUNS):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            gen.sample(mb, kb, sb, steps=steps, guidance=guidance, seed=seed)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"batch {b} x 60 s on {torch.cuda.get_device_name()}, guidance {guidance:g}: {med:.3f} s = "
              f"{b * SECONDS / med:.0f} s of animation per s ({b * SECONDS / med / 60:.0f} min/s)")


if __name__ == "__main__":
    main()

"""The generator's network sampling on new lines: torch against ONNX Runtime and its session options.

The same distinct real lines as bench_batch (asterisk prompts, 2-10 s), features computed once; each
configuration samples every line once per round (4 Euler steps, guidance 2.0: the shipped sampler), the
configurations alternate round by round so load changes hit them alike; medians over the rounds, and
the CPU time of the process (user + sys) beside the wall time.

    python benchmarks/bench_onnx.py [--lines 30] [--rounds 5] [--configs torch1,torch2,ort1,ort2,...]

Configurations: torchN (N threads, OMP_WAIT_POLICY=PASSIVE as `dubtool` sets it), ortN (N intra-op
threads, the shipped options: no spinning, all graph optimisations), ortN-spin (spinning threads),
ortN-basic / ortN-extended (lower graph optimisation levels).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_CONFIGS = "torch1,torch2,ort1,ort2,ort2-spin,ort1-basic,ort1-extended"


def ort_generator(threads: int, spin: bool, level: str):
    import onnxruntime as ort

    from dubtool import onnxrt
    from dubtool.generate import DEFAULT_MODEL, OnnxGenerator

    manifest, _, why = onnxrt.open_sidecar(DEFAULT_MODEL)
    if manifest is None:
        raise SystemExit(f"no usable ONNX sidecar: {why}")
    so = onnxrt.session_options(threads, spin=spin, level=level)
    paths = onnxrt.sidecar_paths(DEFAULT_MODEL)
    sessions = [ort.InferenceSession(paths[p].read_bytes(), so, providers=["CPUExecutionProvider"])
                for p in ("encode", "velocity")]
    return OnnxGenerator.from_manifest(onnxrt.OnnxNet(*sessions), manifest, DEFAULT_MODEL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS)
    args = ap.parse_args()

    from bench_batch import real_lines

    from dubtool.generate import load_model, style_context
    from dubtool.keypoints import keypoints_from_curves
    from dubtool.upperface import procedural_upper_face

    lines = [a for _, a in real_lines(args.lines)]
    audio_s = sum(a.duration_s for a in lines)
    up = procedural_upper_face(12.0, 30.0, np.random.default_rng(0)).animation.values
    kp_all, style = keypoints_from_curves(up), style_context(up)
    gens = {}
    for name in args.configs.split(","):
        if name.startswith("torch"):
            gens[name] = load_model(backend="torch")
        else:
            base, _, opt = name.partition("-")
            gens[name] = ort_generator(int(base[3:]), opt == "spin", opt if opt in ("basic", "extended") else "all")
    feats = {}
    for name, gen in gens.items():  # each backend's own features (numpy or torch tensors), computed once
        kind = "torch" if name.startswith("torch") else "ort"
        if kind not in feats:
            feats[kind] = [gen._prepare(a, kp_all[:int(round(a.duration_s * 30.0))], style) for a in lines]
    print(f"# network sampling alone, {len(lines)} distinct real lines ({audio_s:.0f} s of speech), "
          f"{gens[next(iter(gens))].sampler.steps} steps, guidance {gens[next(iter(gens))].sampler.guidance}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    walls = {n: [] for n in gens}
    cpus = {n: [] for n in gens}
    for name, gen in gens.items():  # warm-up: first calls set up kernels and arenas
        set_threads(name)
        m, k, s = feats["torch" if name.startswith("torch") else "ort"][0]
        gen.sample(m[None], k[None], s[None], steps=gen.sampler.steps, guidance=gen.sampler.guidance, seed=0)
    for _ in range(args.rounds):
        for name, gen in gens.items():
            set_threads(name)
            f = feats["torch" if name.startswith("torch") else "ort"]
            c0, t0 = os.times(), time.perf_counter()
            for seed, (m, k, s) in enumerate(f):
                gen.sample(m[None], k[None], s[None], steps=gen.sampler.steps, guidance=gen.sampler.guidance, seed=seed)
            t1, c1 = time.perf_counter(), os.times()
            walls[name].append(t1 - t0)
            cpus[name].append((c1.user - c0.user) + (c1.system - c0.system))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print("| configuration | wall (median) | x real time | CPU s | wall range |")
    print("|---|---|---|---|---|")
    for name in gens:
        w, c = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"| {name} | {w:.2f} s | {audio_s / w:.0f}x | {c:.2f} | {min(walls[name]):.2f}-{max(walls[name]):.2f} |")


def set_threads(name: str) -> None:
    if name.startswith("torch"):
        import torch

        torch.set_num_threads(int(name[5:]))


if __name__ == "__main__":
    main()

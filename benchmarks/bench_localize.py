"""Speed of `dubtool localize`: a 60 s line with the model loaded (x real time, stage split), the
teacher path, `align` alone, and batch throughput (lines/minute) with 1 and 2 worker processes.

Material: Debian's asterisk prompts (en source, fr dub: same prompts, different speakers) chained
into lines with pauses; the source upper face is procedural (upperface.py). The flow model is
models/dubtool_flow_v6.pt when present, else an untrained checkpoint of the same configuration
(configs/flow_v6.json: identical compute, meaningless output) -- the first line printed says which.
Prints one line per figure (median of several runs)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dubtool.arkit import Animation  # noqa: E402
from dubtool.audio import Audio, load_audio, write_wav  # noqa: E402
from dubtool.performance import Performance, save_performance  # noqa: E402
from timing import timed  # noqa: E402  (benchmarks/timing.py)

SR = 16000
SOUNDS = Path("/usr/share/asterisk/sounds")
PROMPTS = ("hello-world", "agent-pass", "auth-thankyou", "conf-onlyperson", "pbx-invalid", "vm-intro", "vm-login",
           "all-circuits-busy-now", "privacy-unident", "vm-nobodyavail", "vm-goodbye")


def chain(voice: str, seconds: float, pause_s: float = 0.7) -> Audio:
    parts, total, k = [np.zeros(int(0.3 * SR), np.float32)], 0.3, 0
    while total < seconds:
        f = SOUNDS / voice / f"{PROMPTS[k % len(PROMPTS)]}.wav"
        k += 1
        if not f.is_file():
            continue
        a = load_audio(f).samples
        parts += [a, np.zeros(int(pause_s * SR), np.float32)]
        total += len(a) / SR + pause_s
    x = np.concatenate(parts)[:int(seconds * SR)]
    return Audio(x, SR)


def performance_for(src: Audio, fps: float = 30.0) -> Performance:
    from dubtool.upperface import procedural_upper_face

    n = int(round(src.duration_s * fps))
    up = procedural_upper_face(src.duration_s, fps, np.random.default_rng(0))
    v = up.animation.values
    v = v[:n] if v.shape[0] >= n else np.pad(v, ((0, n - v.shape[0]), (0, 0)), mode="edge")
    z = np.zeros((n, 478, 3), np.float32)
    return Performance(z, z.copy(), np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
                       Animation(v.astype(np.float32), fps), np.ones(n, bool), np.ones(n, np.float32), src,
                       {"source": "bench"})


def model_path(tmp: Path) -> tuple[str, str]:
    ckpt = ROOT / "models" / "dubtool_flow_v6.pt"
    if ckpt.is_file():
        return str(ckpt), "trained models/dubtool_flow_v6.pt"
    from dubtool.generate import ModelDimensions, SamplerConfig, build_net, identity_stats, save_checkpoint

    cfg = json.loads((ROOT / "configs" / "flow_v6.json").read_text())
    dims, sampler = ModelDimensions(**cfg["model"]), SamplerConfig(**cfg["sampler"])
    p = tmp / "flow_v6_untrained.pt"
    save_checkpoint(p, build_net(dims), dims, sampler, identity_stats(dims), {"name": "untrained-flow_v6-config"})
    return str(p), "UNTRAINED checkpoint with configs/flow_v6.json dims (same compute as the trained model)"


def main() -> None:
    import torch

    from dubtool.align import align
    from dubtool.batch import run_manifest
    from dubtool.localize import LocalizeOptions, get_generator, localize

    tmp = Path(tempfile.mkdtemp(prefix="bench_localize_"))
    path, what = model_path(tmp)
    import os

    print(f"model: {what}; torch threads {torch.get_num_threads()}; load average at start "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes inflate wall times)")
    src = chain("en_US_f_Allison", 60.0)
    dub = chain("fr_CA_f_June", 60.0)
    perf = performance_for(src)
    gen = get_generator(path, "cpu")

    t = timed(lambda: align(src, dub), runs=5)
    dt, tm = t.median, t.result
    print(f"align 60 s line (phrase DP, no transcripts): {dt * 1000:.0f} ms ({len(tm.phrases)} phrase groups)")

    opts = LocalizeOptions(lang="fr", model_path=path)
    localize(perf, dub, opts, gen)  # warm-up
    c0 = time.process_time()
    t = timed(lambda: localize(perf, dub, opts, gen), runs=7)
    dt, lo, hi, res = t.median, t.low, t.high, t.result
    cpu = (time.process_time() - c0) / 7
    t = res.report["timings_s"]
    print(f"localize 60 s line, flow model loaded ({res.report['settings'].get('steps')} steps): "
          f"{dub.duration_s / dt:.0f}x real time (median {dt:.2f} s wall of 7 runs, range {lo:.2f}-{hi:.2f} s; "
          f"{cpu:.2f} s CPU per run over all threads)")

    text = " ".join(["Composez votre mot de passe suivi du dièse. Merci."] * 6)
    topts = LocalizeOptions(lang="fr", model="teacher", dub_text=text)
    localize(perf, dub, topts)
    t = timed(lambda: localize(perf, dub, topts), runs=5)
    dt, lo, hi, res = t.median, t.low, t.high, t.result
    print(f"localize 60 s line, teacher with transcript: {dub.duration_s / dt:.0f}x real time "
          f"(median {dt:.2f} s, range {lo:.2f}-{hi:.2f} s)")

    # batch throughput: 16 lines of 10 s; spawned workers start python, import and load the model first
    save_performance(performance_for(chain("en_US_f_Allison", 10.0)), tmp / "src.perf")
    write_wav(chain("fr_CA_f_June", 10.0), tmp / "dub.wav")
    for workers in (1, 2):
        rows = ["source,dub,lang,output"] + [f"src.perf,dub.wav,fr,out{workers}/line{i}.csv" for i in range(16)]
        (tmp / f"m{workers}.csv").write_text("\n".join(rows) + "\n")
        t0 = time.perf_counter()
        results = run_manifest(tmp / f"m{workers}.csv", LocalizeOptions(model_path=path), workers=workers)
        dt = time.perf_counter() - t0
        ok = sum(r.status == "done" for r in results)
        how = " in-process, model already loaded" if workers == 1 else " spawned, incl. start-up + model load"
        print(f"batch {ok} x 10 s lines, {workers} worker(s){how}: {ok / dt * 60:.0f} lines/min ({dt:.1f} s wall)")


if __name__ == "__main__":
    main()

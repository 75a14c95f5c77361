"""Batch throughput on Ray against the local batch, per core: a manifest of distinct 5 s lines run
(a) by the local batch with 1 and 2 workers and (b) with `--ray` on a real cluster on this machine
(`ray start --head` + `ray start --address`, 1 CPU per node) with 1 and 2 actors.

The configurations take turns within each round (so machine load hits them alike); each figure is
the median over the rounds. Per run, in lines/min:
* wall: all lines over the whole run_manifest call (worker start-up, Ray connect, model loads included);
* steady: after every worker finished its first line, (lines - workers) / (last - that moment):
  the rate a long batch converges to;
* per CPU: lines per minute of CPU time of the worker processes (local pool workers, the in-process
  worker, or the Ray actors, read from /proc), in the steady part: load-independent, and what "per
  core" means for a machine with no other jobs. On a busy machine wall rates are skewed by the
  kernel's autogroup scheduling (each `ray start` node is a session of its own and gets its own
  share of the CPUs, the local batch's workers share one), so compare the per-CPU rates.
Goal (issue #16): a Ray run within 10 % of the local batch's throughput per core.

    python benchmarks/bench_ray.py [--lines 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_localize import PROMPTS, SOUNDS, SR, model_path, performance_for  # noqa: E402
from dubtool.audio import Audio, load_audio, write_wav  # noqa: E402
from dubtool.performance import save_performance  # noqa: E402


def line(voice: str, seconds: float, first: int, pause_s: float) -> Audio:
    """A line of `seconds` from the asterisk prompts, starting at prompt `first` (distinct lines)."""
    parts, total, k = [np.zeros(int(0.3 * SR), np.float32)], 0.3, first
    while total < seconds:
        f = SOUNDS / voice / f"{PROMPTS[k % len(PROMPTS)]}.wav"
        k += 1
        if f.is_file():
            a = load_audio(f).samples
            parts += [a, np.zeros(int(pause_s * SR), np.float32)]
            total += len(a) / SR + pause_s
    return Audio(np.concatenate(parts)[:int(seconds * SR)], SR)


def make_lines(tmp: Path, n: int) -> list[str]:
    rows = []
    for i in range(n):
        pause = 0.35 + 0.05 * (i // len(PROMPTS))
        save_performance(performance_for(line("en_US_f_Allison", 5.0, i, pause)), tmp / f"src{i}.perf")
        write_wav(line("fr_CA_f_June", 5.0, i + 3, pause + 0.1), tmp / f"dub{i}.wav")
        rows.append(f"src{i}.perf,dub{i}.wav,fr,OUT/line{i}.csv")
    return rows


def cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (/proc/PID/stat fields 14 and 15)."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def local_workers() -> list[int]:
    """This process's spawned pool workers, or this process itself when the batch runs in-process."""
    me = str(os.getpid())
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1] == me and \
                        b"spawn_main" in Path(f"/proc/{d}/cmdline").read_bytes():
                    kids.append(int(d))
            except (OSError, IndexError):
                continue
    return kids or [os.getpid()]


def run(tmp: Path, rows: list[str], name: str, options, workers: int, ray: str | None,
        workers_of) -> tuple[float, float, float]:
    from dubtool.batch import run_manifest
    from dubtool.localize import _GENERATORS

    _GENERATORS.clear()  # the in-process worker loads the model like every other worker does
    out = f"{name}_{time.monotonic_ns()}"
    m = tmp / f"{out}.csv"
    m.write_text("source,dub,lang,output\n" + "\n".join(r.replace("OUT", out) for r in rows) + "\n")
    stamps: list[float] = []
    cpu: list[float] = []

    def on_result(r) -> None:
        stamps.append(time.perf_counter())
        cpu.append(cpu_s(workers_of()))

    t0 = time.perf_counter()
    results = run_manifest(m, options, workers=workers, ray=ray, on_result=on_result)
    wall = time.perf_counter() - t0
    bad = [r for r in results if r.status != "done"]
    if bad:
        raise SystemExit(f"{name}: {len(bad)} line(s) failed: {bad[0].message}")
    n = len(results)
    steady = (n - workers) / (stamps[-1] - stamps[workers - 1]) * 60
    per_cpu = (n - workers) / (cpu[-1] - cpu[workers - 1]) * 60
    return n / wall * 60, steady, per_cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("bench_ray: skipped, Ray is not installed (pip install 'dubtool[ray]')")
        return

    import torch

    from dubtool.localize import LocalizeOptions
    from raycluster import LocalCluster

    torch.set_num_threads(1)  # the in-process worker gets one core, like a spawned worker or an actor
    tmp = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    path, what = model_path(tmp)
    rows = make_lines(tmp, args.lines)
    options = LocalizeOptions(lang="fr", model_path=path)
    print(f"model: {what}; {args.lines} distinct 5 s lines; load average at start {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (other processes inflate wall times)")
    configs = [("local, 1 worker", 1, False), ("local, 2 workers", 2, False),
               ("ray, 1 actor (1 node used)", 1, True), ("ray, 2 actors (2 nodes)", 2, True)]
    got: dict[str, list[tuple[float, float, float]]] = {c[0]: [] for c in configs}
    with LocalCluster(nodes=2) as cluster:
        for k in range(args.rounds):
            for name, workers, on_ray in configs:
                got[name].append(run(tmp, rows, f"r{k}w{workers}{'ray' if on_ray else 'loc'}", options, workers,
                                     cluster.address if on_ray else None,
                                     (lambda: cluster.processes("LocalizeWorker")) if on_ray else local_workers))
                w, s, c = got[name][-1]
                print(f"  round {k + 1} {name}: {w:.0f} wall / {s:.0f} steady / {c:.0f} per CPU-minute lines/min "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    med = {name: tuple(statistics.median(x[i] for x in v) for i in range(3)) for name, v in got.items()}
    print("\n| configuration | wall lines/min | steady lines/min | steady lines per CPU-minute | per CPU vs local, same workers |")
    print("|---|---|---|---|---|")
    for name, workers, on_ray in configs:
        w, s, c = med[name]
        local = med[configs[workers - 1][0]][2]
        print(f"| {name} | {w:.0f} | {s:.0f} | {c:.0f} | {c / local:.0%} |")


if __name__ == "__main__":
    main()

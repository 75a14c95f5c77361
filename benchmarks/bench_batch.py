"""Throughput on what users run: a batch of DISTINCT real speech lines, each a new dub.

Material: Debian's asterisk prompts (real recorded speech, fr / es / en / ru voices), consecutive
prompts of one voice joined with 0.3 s pauses into lines of 2-10 s (durations spread evenly, fixed
seed), and the bundled example actor (examples/actor_en.mp4, extracted once) as the source .perf of
every line. Shipped model models/dubtool_flow_v6.pt with its own sampler settings.

Figures (medians of --runs passes, all in this one process unless said otherwise):
  (a) batch, model loaded: `localize --manifest`'s path (batch.run_manifest, 1 worker in-process) over
      all lines -> lines/min and x real time; and a set of 5 s lines (the issue's goal: >= 300/min).
  (b) one-shot: `dubtool localize` as a fresh process per line, on a subset.
  (c) physical floor: decode + log-mel features + the network's sampling alone, per line, same lines;
      the ratio (a)/(c) is the per-line overhead of everything else (time map, warp, keypoints,
      metrics, file I/O).
  (d) first run of new lines vs a repeat of the same lines in one process (the issue's 2.5x vs 13.6x).

    python benchmarks/bench_batch.py [--lines 200] [--runs 3] [--oneshot 8] [--no-workers2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As `dubtool` itself does (cli.main): torch's OpenMP threads sleep rather than spin while they wait, numpy's
# OpenBLAS runs one thread (BENCH_OMP_DEFAULT=1 leaves the libraries' defaults, to time code from before).
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if not os.environ.get("BENCH_OMP_DEFAULT"):  # dubtool's own thread settings (cli.thread_defaults), before numpy loads
    from dubtool import cli as _cli

    getattr(_cli, "thread_defaults", lambda: os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE"))()

import numpy as np  # noqa: E402

from dubtool.audio import SAMPLE_RATE, Audio, load_audio, write_wav  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds")
# The voices' own folders, not the fr/es/en/ru links: installing asterisk-prompt-fr-armelle or -es-co turns
# fr/ and es/ into folders of .gsm prompts (2026-12-02).
VOICES = (("fr_CA_f_June", "fr"), ("es_MX_f_Allison", "es"), ("en_US_f_Allison", "en"), ("ru_RU_f_IvrvoiceRU", "ru"))
PAUSE_S = 0.3


def _model_path() -> str | None:
    """--model-path, as main sets it for this process and the spawned workers (None: the shipped model)."""
    return os.environ.get("BENCH_MODEL_PATH") or None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def real_lines(n: int, seed: int = 0, durations: list[float] | None = None) -> list[tuple[str, Audio]]:
    """n distinct (lang, Audio) lines of real speech, 2-10 s (or the given durations): consecutive
    prompts of one voice joined with short pauses, cut at the target length."""
    rng = np.random.default_rng(seed)
    if durations is None:
        durations = list(rng.permutation(np.linspace(2.0, 10.0, n)))
    pools = []
    for folder, lang in VOICES:
        files = sorted((SOUNDS / folder).glob("*.wav"))
        if files:
            pools.append((lang, files))
    if not pools:
        raise SystemExit(f"no asterisk prompts under {SOUNDS} (apt-get install asterisk-core-sounds-en-wav ...)")
    cursor = {lang: 0 for lang, _ in pools}
    gap = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    out = []
    for i, dur in enumerate(durations):
        lang, files = pools[i % len(pools)]
        parts, total = [], 0.0
        while total < dur:
            f = files[cursor[lang] % len(files)]
            cursor[lang] += 1
            a = load_audio(f).samples
            if a.size < SAMPLE_RATE // 5:
                continue
            parts += [a, gap]
            total += (a.size + gap.size) / SAMPLE_RATE
        x = np.concatenate(parts)[:int(round(dur * SAMPLE_RATE))]
        out.append((lang, Audio(x.astype(np.float32), SAMPLE_RATE)))
    return out


def write_lines(lines: list[tuple[str, Audio]], folder: Path, perf: Path, tag: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["source,dub,lang,output"]
    for i, (lang, a) in enumerate(lines):
        wav = folder / f"{tag}{i:03d}.wav"
        write_wav(a, wav)
        rows.append(f"{perf},{wav},{lang},{folder / 'out' / f'{tag}{i:03d}.csv'}")
    manifest = folder / f"{tag}.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def batch_pass(manifest: Path, options, workers: int = 1) -> tuple[float, int]:
    """Wall seconds of one `--manifest` run (outputs removed first so every row is done)."""
    import shutil

    from dubtool.batch import run_manifest

    shutil.rmtree(manifest.parent / "out", ignore_errors=True)
    for p in manifest.parent.glob(f"{manifest.name}.results.*"):
        p.unlink()
    t = time.perf_counter()
    results = run_manifest(manifest, options, workers=workers)
    dt = time.perf_counter() - t
    bad = [r for r in results if r.status != "done"]
    if bad:
        raise SystemExit(f"{len(bad)} row(s) failed, first: line {bad[0].line}: {bad[0].message}")
    return dt, len(results)


def floor_pass(wavs: list[Path], gen, style, keypoints_for) -> float:
    """Decode + features + network sampling alone, per line (what no pipeline can avoid)."""
    sc = gen.sampler
    t = time.perf_counter()
    for w in wavs:
        a = load_audio(w)
        kp = keypoints_for(int(round(a.duration_s * gen.fps)))
        mel, kpt, st = gen._prepare(a, kp, style)
        gen.sample(mel[None], kpt[None], st[None], steps=sc.steps, guidance=sc.guidance, seed=0)
    return time.perf_counter() - t


def generation_alone(gen, wavs, style, keypoints_for, audio_s, runs, figures) -> None:
    """The network's sampling alone on the features of new lines (the >= 100x goal)."""
    sc = gen.sampler
    feats = []
    for w in wavs:
        a = load_audio(w)
        feats.append((a.duration_s, gen._prepare(a, keypoints_for(int(round(a.duration_s * gen.fps))), style)))
    gens = []
    for _ in range(runs):
        t = time.perf_counter()
        for _, (mel, kpt, st) in feats:
            gen.sample(mel[None], kpt[None], st[None], steps=sc.steps, guidance=sc.guidance, seed=0)
        gens.append(time.perf_counter() - t)
    g = statistics.median(gens)
    print(f"generation alone (network sampling, {sc.steps} steps, guidance {sc.guidance}), new lines: "
          f"{audio_s / g:.0f}x real time (goal >= 100x; median of {runs}: {g:.1f} s)")
    figures["generate_x"] = audio_s / g


def _generation_worker(wavs, perf, runs, barrier, queue) -> None:
    """One of `generation_two_processes`'s workers: 1 thread, the model loaded, its lines' features
    computed, then `runs` timed passes of sampling started together with the other worker."""
    from dubtool.generate import set_num_threads, style_context
    from dubtool.keypoints import keypoints_from_curves
    from dubtool.localize import get_generator
    from dubtool.performance import load_performance

    set_num_threads(1)
    gen = get_generator(_model_path(), "cpu")
    src = load_performance(perf)
    style = style_context(src.animation.values)
    kp_src = np.asarray(keypoints_from_curves(src.animation.values), np.float32)
    feats = []
    for w in wavs:
        a = load_audio(w)
        n = int(round(a.duration_s * gen.fps))
        feats.append(gen._prepare(a, kp_src[np.minimum(np.arange(n), len(kp_src) - 1)], style))
    sc = gen.sampler
    spans = []
    for _ in range(runs):
        barrier.wait()
        t = time.time()
        for mel, kpt, st in feats:
            gen.sample(mel[None], kpt[None], st[None], steps=sc.steps, guidance=sc.guidance, seed=0)
        spans.append((t, time.time()))
    queue.put(spans)


def generation_two_processes(wavs, perf, audio_s, runs, figures) -> None:
    """The network's sampling alone with both cores busy: 2 processes of 1 thread (as `--workers 2`),
    each sampling half of the lines; wall from the common start to the last one's end."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    halves = [wavs[0::2], wavs[1::2]]
    procs = [ctx.Process(target=_generation_worker, args=(h, perf, runs, barrier, queue)) for h in halves]
    for p in procs:
        p.start()
    spans = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    walls = [max(s[r][1] for s in spans) - min(s[r][0] for s in spans) for r in range(runs)]
    g = statistics.median(walls)
    print(f"generation alone, 2 processes of 1 thread (each half of the lines), new lines: {audio_s / g:.0f}x real "
          f"time (goal >= 100x; median of {runs}: {g:.1f} s; {min(walls):.1f}-{max(walls):.1f})")
    figures["generate2_x"] = audio_s / g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--five", type=int, default=60, help="number of 5 s lines for the lines/min goal")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--oneshot", type=int, default=8, help="lines run one-shot (fresh process each)")
    ap.add_argument("--parts", default="first,batch,workers2,five,five2,floor,generate,generate2,oneshot",
                    help="comma list of the figures to measure")
    ap.add_argument("--json", help="also write all figures here")
    ap.add_argument("--model-path", default=None, help="flow checkpoint (default: the shipped one); the spawned "
                    "workers read it from BENCH_MODEL_PATH")
    args = ap.parse_args()
    if args.model_path:
        os.environ["BENCH_MODEL_PATH"] = str(Path(args.model_path).resolve())

    import torch

    from dubtool.generate import style_context
    from dubtool.localize import LocalizeOptions, get_generator
    from dubtool.performance import load_performance

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    perf = tmp / "actor_en.perf"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    dubtool = [sys.executable, "-m", "dubtool"]
    subprocess.run(dubtool + ["extract", str(ROOT / "examples" / "actor_en.mp4"), "-o", str(perf)], env=env,
                   check=True, capture_output=True)
    lines = real_lines(args.lines)
    five = real_lines(args.five, seed=1, durations=[5.0] * args.five)
    manifest = write_lines(lines, tmp / "lines", perf, "line")
    manifest5 = write_lines(five, tmp / "five", perf, "five")
    audio_s = sum(a.duration_s for _, a in lines)
    audio5_s = sum(a.duration_s for _, a in five)
    print(f"# batch of distinct real lines: {len(lines)} lines of 2-10 s ({audio_s:.0f} s of speech, "
          f"{', '.join(sorted({l for l, _ in lines}))}), {len(five)} lines of 5 s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    figures: dict = {"lines": len(lines), "audio_s": audio_s}

    options = LocalizeOptions(model_path=_model_path())
    t = time.perf_counter()
    gen = get_generator(_model_path(), "cpu")
    log(f"model load {time.perf_counter() - t:.2f} s; sampler {gen.sampler}")
    print(f"# generator backend: {type(gen).__name__} ({'ONNX Runtime' if hasattr(gen, 'runtime') else 'torch'})")

    parts = set(args.parts.split(","))
    # (d) first run vs repeat, before anything else has run in this process: 8 new lines, then the same 8
    if "first" in parts:
        first8 = write_lines(real_lines(8, seed=2), tmp / "first8", perf, "f")
        t_first, n8 = batch_pass(first8, options)
        t_repeat, _ = batch_pass(first8, options)
        s8 = sum(load_audio(p).duration_s for p in sorted((tmp / "first8").glob("f*.wav")))
        print(f"first run of 8 new lines (fresh process, model loaded): {s8 / t_first:.1f}x real time "
              f"({t_first:.2f} s); the same 8 again: {s8 / t_repeat:.1f}x ({t_repeat:.2f} s)")
        figures["first8_x"], figures["repeat8_x"] = s8 / t_first, s8 / t_repeat

    # (a) batch with the model loaded
    def timed_batch(label: str, key: str, rows, seconds: float, path, workers: int = 1) -> float:
        walls = [batch_pass(path, options, workers=workers)[0] for _ in range(args.runs)]
        wall = statistics.median(walls)
        print(f"(a) {label}: {len(rows) / wall * 60:.0f} lines/min, {seconds / wall:.1f}x real time "
              f"(median of {args.runs}: {wall:.1f} s; {min(walls):.1f}-{max(walls):.1f})")
        figures[f"{key}_lines_per_min"], figures[f"{key}_x"] = len(rows) / wall * 60, seconds / wall
        return wall

    wall = None
    if "batch" in parts:
        wall = timed_batch(f"batch, model loaded, 1 worker in-process ({torch.get_num_threads()} threads)", "batch",
                           lines, audio_s, manifest)
    if "workers2" in parts:
        timed_batch("batch, 2 spawned workers (1 thread each, incl. their start-up and model load)", "batch2",
                    lines, audio_s, manifest, workers=2)
    if "five" in parts:
        timed_batch("batch of 5 s lines, model loaded (goal >= 300 lines/min)", "five", five, audio5_s, manifest5)
    if "five2" in parts:
        timed_batch("batch of 5 s lines, `--workers 2` (1 thread each, incl. their start-up and model load)", "five2",
                    five, audio5_s, manifest5, workers=2)

    # (c) the physical floor on the same lines
    src = load_performance(perf)
    style = style_context(src.animation.values)
    kp_src = None

    def keypoints_for(n: int) -> np.ndarray:
        nonlocal kp_src
        if kp_src is None:
            from dubtool.keypoints import keypoints_from_curves

            kp_src = np.asarray(keypoints_from_curves(src.animation.values), np.float32)
        idx = np.minimum(np.arange(n), len(kp_src) - 1)
        return kp_src[idx]

    wavs = sorted((tmp / "lines").glob("line*.wav"))
    if "floor" in parts:
        floors = [floor_pass(wavs, gen, style, keypoints_for) for _ in range(args.runs)]
        floor = statistics.median(floors)
        print(f"(c) physical floor (decode + features + network sampling, same {len(wavs)} lines): "
              f"{len(wavs) / floor * 60:.0f} lines/min, {audio_s / floor:.1f}x real time ({floor:.1f} s)"
              + (f"; batch / floor = {wall / floor:.2f}" if wall else ""))
        figures["floor_x"] = audio_s / floor
        if wall:
            figures["batch_over_floor"] = wall / floor

    if "generate" in parts:  # the network's sampling alone on new lines, for the >= 100x goal
        generation_alone(gen, wavs, style, keypoints_for, audio_s, args.runs, figures)
    if "generate2" in parts:
        generation_two_processes(wavs, perf, audio_s, args.runs, figures)
    if "oneshot" in parts and args.oneshot:  # (b) a fresh `dubtool localize` process per line
        sub = [(w, lang) for w, (lang, _) in zip(wavs, lines)][:args.oneshot]
        times, secs = [], 0.0
        for w, lang in sub:
            t = time.perf_counter()
            subprocess.run(dubtool + ["localize", str(perf), str(w), "--lang", lang, "-o", str(tmp / "oneshot.csv")],
                           env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
            secs += load_audio(w).duration_s
        print(f"(b) one-shot `dubtool localize` per line ({len(sub)} lines, {secs:.0f} s of speech): "
              f"{len(sub) / sum(times) * 60:.0f} lines/min, {secs / sum(times):.1f}x real time, "
              f"median {statistics.median(times):.2f} s per line")
        figures["oneshot_lines_per_min"], figures["oneshot_x"] = len(sub) / sum(times) * 60, secs / sum(times)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

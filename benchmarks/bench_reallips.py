"""Real-lips benchmark: the flow model's mouth against real tracked lips on ../shared/realclips/ (19 real
talking-face clips, evaluation and calibration only).

For each clip: its tracked performance (`dubtool extract` .perf, cached in --cache; extracted there when
missing) is the source AND the reference; its own audio is the dub. Lips are generated with
`dubtool.localize.localize` in flow mode (no transcript; identity time map, so the upper face is the
clip's own) and scored with `dubtool.reference.score` (mouth-opening r at lag 0 and best lag within ±3
frames, jawOpen r, per-channel amplitude ratio). Baseline: the dub's loudness envelope alone against the
real mouth. Amplitude: std of each lower-face weight over all clips' speech frames, generated vs real
ARKit speech (the table in --reference-stats, parsed at run time) and vs the clips' own extracted weights.

    python benchmarks/bench_reallips.py [--model-path models/dubtool_flow_v6.pt] [--json out.json] [--md out.md]

Prints a markdown report on stdout (figure lines), progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dubtool import reference as refmod  # noqa: E402
from dubtool.arkit import LOWER_FACE, index  # noqa: E402

# ../shared beside the checkout (evaluation and calibration material, never committed); tracked clips are
# cached under build/ so a rerun skips the face tracker.
DEFAULT_CLIPS = ROOT.parent / "shared" / "realclips"
DEFAULT_CACHE = ROOT / "build" / "realclips"
DEFAULT_STATS = ROOT.parent / "shared" / "reference" / "arkit_speech_stats.md"
# Channels whose motion the report lists (the lower face that a viewer reads; tongueOut is not in the stats).
REPORT_CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLowerDownLeft",
                   "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "mouthPressLeft",
                   "mouthPressRight", "mouthRollLower", "mouthRollUpper", "mouthSmileLeft", "mouthStretchLeft",
                   "mouthShrugLower", "mouthShrugUpper")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_or_extract(video: Path, cache: Path):
    from dubtool.performance import load_performance, save_performance

    perf_path = cache / (video.stem + ".perf")
    if not perf_path.is_file():
        from dubtool.extract import extract

        log(f"extracting {video.name} -> {perf_path}")
        cache.mkdir(parents=True, exist_ok=True)
        save_performance(extract(video), perf_path)
    return load_performance(perf_path)


def generate_own_audio(perf, generator, seed: int = 0):
    """Flow-mode localize of a clip onto its own audio (identity time map, no transcript)."""
    from dubtool.localize import LocalizeOptions, localize
    from dubtool.timemap import uniform_timemap

    tm = uniform_timemap(perf.duration_s, perf.audio.duration_s, "the clip's own audio")
    opts = LocalizeOptions(lang="en", source_lang="en", model="flow", seed=seed)
    return localize(perf, perf.audio, opts, generator=generator, timemap=tm).animation


def _stat(xs, fn) -> float:
    xs = [float(x) for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return float(fn(xs)) if xs else math.nan


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def run(args) -> dict:
    from dubtool.localize import get_generator

    clips = sorted(Path(args.clips).glob("*.mp4"))
    if args.limit:
        clips = clips[:args.limit]
    if not clips:
        raise SystemExit(f"no clips in {args.clips}")
    generator = get_generator(args.model_path, args.device)
    stats_table = refmod.parse_stats_markdown(Path(args.reference_stats).read_text())
    rows, gen_speech, real_speech = [], [], []
    t_gen = 0.0
    for k, video in enumerate(clips, 1):
        perf = load_or_extract(video, Path(args.cache))
        if perf.audio is None:
            log(f"{video.name}: no audio track, skipped")
            continue
        t0 = time.perf_counter()
        gen = generate_own_audio(perf, generator, args.seed)
        t_gen += time.perf_counter() - t0
        ref = refmod.reference_from_performance(perf)
        s = refmod.score(gen, ref, perf.audio.samples, perf.audio.sample_rate, max_lag=args.max_lag)
        gv, rv, _ = refmod.common_frames(gen, ref)
        mask = refmod.speech_mask(perf.audio.samples, perf.audio.sample_rate, gen.fps, len(gv))
        gen_speech.append(gv[mask])
        real_speech.append(rv[mask])
        rows.append({"clip": video.stem, "duration_s": round(perf.duration_s, 2), **s.to_json()})
        log(f"[{k}/{len(clips)}] {video.stem}: mouth r {s.mouth_r:.2f} (best {s.mouth_r_best:.2f} at lag "
            f"{s.lag_frames:+d}), jaw r {s.jaw_r:.2f}, envelope {s.envelope_r_best:.2f}")

    gs, rs = np.concatenate(gen_speech), np.concatenate(real_speech)
    speech_s = len(gs) / generator.fps
    std_vs_arkit, std_vs_clips = {}, {}
    for name in LOWER_FACE:
        c = index(name)
        g_std = float(gs[:, c].std())
        if name in stats_table and stats_table[name][1] > 0:
            std_vs_arkit[name] = {"generated_std": round(g_std, 4), "arkit_std": stats_table[name][1],
                                  "ratio": round(g_std / stats_table[name][1], 3)}
        r_std = float(rs[:, c].std())
        if r_std > 1e-3:
            std_vs_clips[name] = {"generated_std": round(g_std, 4), "extracted_std": round(r_std, 4),
                                  "ratio": round(g_std / r_std, 3)}

    def agg(key):
        vals = [r[key] for r in rows]
        return {"median": _stat(vals, np.median), "mean": _stat(vals, np.mean)}

    amp = {name: _stat([r["amplitude_ratio"].get(name) for r in rows], np.median) for name in REPORT_CHANNELS}
    summary = {key: agg(key) for key in ("mouth_r", "mouth_r_best", "jaw_r", "envelope_r", "envelope_r_best",
                                         "lag_frames")}
    return {
        "benchmark": "reallips", "model": str(args.model_path or "models/dubtool_flow_v6.pt"),
        "clips": len(rows), "speech_s": round(speech_s, 1), "max_lag_frames": args.max_lag, "seed": args.seed,
        "mouth_source": rows[0]["mouth_source"] if rows else "",
        "generation_realtime_factor": round(sum(r["duration_s"] for r in rows) / max(t_gen, 1e-9), 1),
        "summary": summary, "median_amplitude_ratio_p95": amp,
        "std_vs_arkit_speech": std_vs_arkit, "std_vs_extracted": std_vs_clips,
        "per_clip": rows,
    }


def markdown(res: dict) -> str:
    s = res["summary"]
    lines = [f"# real-lips benchmark: {res['model']} on {res['clips']} clips ({res['speech_s']} s of speech)", "",
             f"mouth opening: real = {res['mouth_source']}; generated = rig lip gap. Best lag within "
             f"±{res['max_lag_frames']} frames (positive = generated late).", "",
             "| figure | median | mean |", "|---|---:|---:|"]
    for key, label in (("mouth_r_best", "mouth-opening r, best lag"), ("mouth_r", "mouth-opening r, lag 0"),
                       ("jaw_r", "jawOpen r (vs extracted jawOpen)"),
                       ("envelope_r_best", "baseline: loudness envelope r, best lag"),
                       ("envelope_r", "baseline: loudness envelope r, lag 0"), ("lag_frames", "lag (frames)")):
        lines.append(f"| {label} | {_f(s[key]['median'])} | {_f(s[key]['mean'])} |")
    lines += ["", "| clip | s | mouth r | mouth r best | lag | jaw r | envelope r best |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in res["per_clip"]:
        lines.append(f"| {r['clip']} | {r['duration_s']:.1f} | {_f(r['mouth_r'])} | {_f(r['mouth_r_best'])} | "
                     f"{r['lag_frames']:+d} | {_f(r['jaw_r'])} | {_f(r['envelope_r_best'])} |")
    lines += ["", "Motion during speech: std of each weight, generated / real ARKit speech (target 0.67-1.5x); "
              "generated / the clips' extracted weights; median per-clip p95 amplitude ratio (generated / extracted).",
              "", "| channel | generated std | ARKit std | ratio | extracted std | ratio | p95 ratio |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name in REPORT_CHANNELS:
        a = res["std_vs_arkit_speech"].get(name, {})
        e = res["std_vs_extracted"].get(name, {})
        g = a.get("generated_std", e.get("generated_std"))
        lines.append(f"| {name} | {_f(g, '{:.3f}')} | {_f(a.get('arkit_std'), '{:.3f}')} | "
                     f"{_f(a.get('ratio'), '{:.2f}x')} | {_f(e.get('extracted_std'), '{:.3f}')} | "
                     f"{_f(e.get('ratio'), '{:.2f}x')} | {_f(res['median_amplitude_ratio_p95'].get(name))} |")
    within = [n for n, a in res["std_vs_arkit_speech"].items() if 1 / 1.5 <= a["ratio"] <= 1.5]
    lines += ["", f"lower-face channels within 1.5x of real ARKit speech std: {len(within)}/"
              f"{len(res['std_vs_arkit_speech'])}; generation {res['generation_realtime_factor']}x real time "
              "(localize, model loaded)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", default=None, help="flow checkpoint (default: the shipped models/dubtool_flow_v6.pt)")
    ap.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    ap.add_argument("--md", type=Path, default=None, help="also write the markdown report here")
    ap.add_argument("--clips", default=str(DEFAULT_CLIPS), help="folder of the real clips (*.mp4)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="folder of their tracked .perf files")
    ap.add_argument("--reference-stats", default=str(DEFAULT_STATS), help="real ARKit speech stats (markdown table)")
    ap.add_argument("--max-lag", type=int, default=refmod.MAX_LAG_FRAMES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=0, help="only the first N clips (quick check)")
    args = ap.parse_args(argv)
    if args.clips == str(DEFAULT_CLIPS) and not any(Path(args.clips).glob("*.mp4")):
        # A fresh clone has no ../shared/realclips (evaluation material, never committed): not a failure.
        print(f"bench_reallips: skipped (no real clips in {args.clips}; give --clips FOLDER)")
        return 0
    res = run(args)
    md = markdown(res)
    print(md, end="")
    from dubtool.fileio import write_text_atomic

    if args.json:
        write_text_atomic(args.json, json.dumps(res, indent=1) + "\n")
        log(f"wrote {args.json}")
    if args.md:
        write_text_atomic(args.md, md)
        log(f"wrote {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`dubtool train --captures` on real material: ../shared/realclips/ tracked by `dubtool extract` (the cached .perf
files, which hold each clip's own audio) used as a small "capture" set. The shipped model is fine-tuned on some
clips and both models are scored on the held-out others with the `dubtool eval --reference` figures (mouth-opening
r against the tracked inner-lip landmarks, per-channel r and amplitude ratios against the clip's tracked curves).

Splits (by speaker/source; the clips' names carry no speaker label, so each split keeps whole sources apart):
  source   fine-tune on the 15 PC-AVS clips (VoxCeleb2 interviews, 224x224), test on the 4 video-retalking
           clips (other people, other footage)
  auto     `dubtool train`'s own automatic hold-out (20 % of all 19 takes, by a hash of the name)

Evaluation only: the fine-tuned checkpoints are written to a temporary folder and deleted (never ship a model
trained on the realclips).

    nice python benchmarks/bench_captures.py [--split source|auto|both] [--steps N] [--base-corpus DIR|none]
        [--base-share 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CACHE = Path("/work/cache/realclips")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_split(split: str, perfs: list[Path], args) -> dict:
    from dubtool.captures import train_on_captures
    from dubtool.train import FinetuneConfig

    with tempfile.TemporaryDirectory(prefix="bench_captures_") as tmp:
        caps = Path(tmp) / "captures"
        caps.mkdir()
        for p in perfs:
            (caps / p.name).symlink_to(p.resolve())
        held = [p.stem for p in perfs if p.stem.startswith("videoretalking")] if split == "source" else None
        base_corpus = None if args.base_corpus == "none" else args.base_corpus
        t0 = time.time()
        cfg = replace(FinetuneConfig(), base_share=args.base_share, l2_base=args.l2_base)
        run = train_on_captures(caps, Path(tmp) / "actor.pt", args.base, holdout=0.2, steps=args.steps,
                                time_limit_s=args.time_limit, base_corpus=base_corpus, heldout_names=held,
                                cfg=cfg, progress=False, log=log)
        wall = time.time() - t0
        card = run.card.read_text(encoding="utf-8")
        clean = clean_speech(args.base, run.out) if args.clean_speech else {}
    out = run.to_json()
    out.update(split=split, wall_s=round(wall, 1), card=card, clean_speech=clean)
    return out


def clean_speech(base, tuned_path) -> dict:
    """Forgetting, as a user sees it: bilabial closure rate, LVE and lip-audio lag on clean espeak speech of the
    base corpus's held-out languages (train.clean_speech_report, the model card's figure), shipped vs fine-tuned."""
    import torch

    from dubtool.generate import load_model
    from dubtool.train import clean_speech_report

    torch.set_num_threads(1)
    out = {}
    for name, path in (("shipped", base), ("fine_tuned", tuned_path)):
        gen = load_model(path)
        log(f"clean-speech check: {name}")
        out[name] = clean_speech_report(gen, gen.meta.get("config", {}).get("corpus", {}))["clean_heldout_lang"]
    return out


def markdown(res: dict) -> str:
    s, ft = res["scores"], res["fine_tune"]
    b, t = s["base"], s["fine_tuned"]
    f = lambda x: "–" if x is None else f"{x:.2f}"
    lines = [f"### split `{res['split']}`: fine-tune on {len(res['used'])} clips, test on {len(res['heldout'])} "
             f"({', '.join(r['take'] for r in res['heldout'])})", "",
             f"fine-tune {ft['steps']} steps in {ft['seconds']:.0f} s ({res['wall_s']:.0f} s for the whole job), "
             f"{res['regulariser']}", "",
             "| figure (median over held-out clips) | shipped | fine-tuned |", "|---|---:|---:|"]
    for k, label in (("mouth_r", "mouth-opening r, lag 0"), ("mouth_r_best", "mouth-opening r, best lag ±3"),
                     ("jaw_r", "jawOpen r"), ("envelope_r", "loudness envelope r (baseline)")):
        lines.append(f"| {label} | {f(b[k])} | {f(t[k])} |")
    for c in ("jawOpen", "mouthLowerDownLeft", "mouthUpperUpLeft", "mouthPressLeft", "mouthSmileLeft", "mouthFunnel"):
        lines.append(f"| {c}: r / p95 ratio / std ratio | {f(b['channel_r'][c])} / {f(b['amplitude_ratio'][c])} / "
                     f"{f(b['std_ratio'][c])} | {f(t['channel_r'][c])} / {f(t['amplitude_ratio'][c])} / "
                     f"{f(t['std_ratio'][c])} |")
    lines += ["", "| held-out clip | mouth r shipped | mouth r fine-tuned |", "|---|---:|---:|"]
    lines += [f"| {r['take']} | {f(r['base_mouth_r'])} | {f(r['fine_tuned_mouth_r'])} |" for r in s["per_take"]]
    pb, pa = ft["probe_loss_before"], ft["probe_loss_after"]
    lines += ["", "flow loss on fixed windows, shipped → fine-tuned: " +
              ", ".join(f"{k} {pb[k]:.3f} → {pa[k]:.3f}" for k in pb), ""]
    cs = res.get("clean_speech") or {}
    if cs:
        a, z = cs["shipped"], cs["fine_tuned"]
        lines += [f"clean espeak speech of held-out languages ({a['clips']} sentences), shipped → fine-tuned: /p b m/ "
                  f"closure {a.get('closure', float('nan')):.2f} → {z.get('closure', float('nan')):.2f} (teacher "
                  f"{a.get('closure_teacher', float('nan')):.2f}), LVE {a['lve']:.2f} → {z['lve']:.2f}", ""]
    return "\n".join(lines)


def plot(results: list[dict], out: Path) -> None:
    """Per held-out clip mouth-opening r, shipped vs fine-tuned, one panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, res in zip(axes[0], results):
        rows = res["scores"]["per_take"]
        x = np.arange(len(rows))
        b = [r["base_mouth_r"] if r["base_mouth_r"] is not None else np.nan for r in rows]
        t = [r["fine_tuned_mouth_r"] if r["fine_tuned_mouth_r"] is not None else np.nan for r in rows]
        ax.bar(x - 0.2, b, 0.4, label="shipped", color="#9aa7b8")
        ax.bar(x + 0.2, t, 0.4, label="fine-tuned", color="#e8744f")
        ax.set_xticks(x, [r["take"].replace("pcavs_", "").replace("videoretalking_", "vr_") for r in rows],
                      rotation=30, ha="right", fontsize=7)
        ax.set_ylim(-0.2, 1.0)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{res['label']}\nmedian {res['scores']['base']['mouth_r']:.2f} -> "
                     f"{res['scores']['fine_tuned']['mouth_r']:.2f}", fontsize=8)
    axes[0][0].set_ylabel("held-out mouth-opening r (lag 0)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    from dubtool.train import FinetuneConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the realclips' .perf files")
    ap.add_argument("--base", default=None, help="checkpoint to fine-tune (default: the shipped one)")
    ap.add_argument("--split", choices=("source", "auto", "both"), default="source")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--base-corpus", default="none", help="corpus folder to mix in, or none (L2-SP only, what a "
                                                          "studio checkout without build/ gets)")
    ap.add_argument("--base-share", type=float, default=0.5, help="share of each batch from --base-corpus (0: the "
                    "corpus only measures forgetting)")
    ap.add_argument("--l2-base", type=float, default=FinetuneConfig.l2_base, help="L2-SP weight")
    ap.add_argument("--no-clean-speech", dest="clean_speech", action="store_false",
                    help="skip the clean-speech closure check (forgetting) of both models")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, nargs="*", default=None, help="draw the per-clip figure from these --json "
                    "files (no training) into --png")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    if args.plot:
        results = []
        for path in args.plot:
            for res in json.loads(path.read_text()):
                l2 = re.search(r"l2_base ([0-9.e-]+)", res["regulariser"])
                res["label"] = (f"split {res['split']}, L2-SP {l2.group(1) if l2 else '?'}"
                                + (" + corpus mix" if "of every batch" in res["regulariser"] else ""))
                results.append(res)
        plot(results, args.png or Path("captures_benchmark.png"))
        return
    perfs = sorted(args.cache.glob("*.perf"))
    if not perfs:
        sys.exit(f"no .perf files in {args.cache} (run `dubtool extract` on ../shared/realclips/*.mp4 into it)")
    results = [run_split(s, perfs, args) for s in (("source", "auto") if args.split == "both" else (args.split,))]
    for r in results:
        print(markdown(r))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

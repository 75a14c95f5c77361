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
        cfg = replace(FinetuneConfig(), base_share=args.base_share)
        run = train_on_captures(caps, Path(tmp) / "actor.pt", args.base, holdout=0.2, steps=args.steps,
                                time_limit_s=args.time_limit, base_corpus=base_corpus, heldout_names=held,
                                cfg=cfg, progress=False, log=log)
        wall = time.time() - t0
        card = run.card.read_text(encoding="utf-8")
    out = run.to_json()
    out.update(split=split, wall_s=round(wall, 1), card=card)
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
    return "\n".join(lines)


def main() -> None:
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
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
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

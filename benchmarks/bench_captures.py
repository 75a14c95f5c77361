"""`dubtool train --captures` on real material: ../shared/realclips/ tracked by `dubtool extract` (the cached .perf
files, which hold each clip's own audio) used as a small "capture" set. The shipped model is fine-tuned on some
clips and both models are scored on the held-out others with the `dubtool eval --reference` figures (mouth-opening
r against the tracked inner-lip landmarks, per-channel r and amplitude ratios against the clip's tracked curves).

Protocol (hyper-parameters are chosen on `select` only, never on a test split's held-out clips):
  DEV      4 PC-AVS clips drawn once (numpy default_rng(19)); they are never a test clip of any split below
  select   fine-tune on the other 11 PC-AVS clips, score on DEV: the validation split the defaults were picked on
  source   fine-tune on the 15 PC-AVS clips (VoxCeleb2 interviews, 224x224), test on the 4 video-retalking
           clips (other people, other footage)
  random1..3  test on 4 clips drawn (default_rng(k)) from the 15 clips outside DEV, fine-tune on the other 15
  auto     `dubtool train`'s own automatic hold-out (20 % of all 19 takes, by a hash of the name; none in DEV)

Evaluation only: the fine-tuned checkpoints are written to a temporary folder and deleted (never ship a model
trained on the realclips).

    nice python benchmarks/bench_captures.py [--split source|random1|...|tests|select] [--steps N]
        [--set key=value ...] [--base-corpus DIR|auto|none] [--base-share X] [--json out.json]
    python benchmarks/bench_captures.py --plot a.json b.json --png docs/captures_benchmark.png
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
TEST_SPLITS = ("source", "random1", "random2", "random3", "auto")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def split_names(split: str, names: list[str]) -> tuple[list[str], list[str]]:
    """(fine-tune on, held out) for one split of the protocol in the module docstring."""
    import numpy as np

    from dubtool.captures import split_holdout

    pc = sorted(n for n in names if n.startswith("pcavs"))
    vr = sorted(n for n in names if n.startswith("videoretalking"))
    dev = sorted(np.random.default_rng(19).choice(pc, 4, replace=False).tolist())
    if split == "select":
        return [n for n in pc if n not in dev], dev
    if split == "source":
        return pc, vr
    if split.startswith("random"):
        pool = [n for n in pc if n not in dev] + vr
        test = sorted(np.random.default_rng(int(split[6:])).choice(pool, 4, replace=False).tolist())
    elif split == "auto":
        test = split_holdout(names, 0.2)[1]
    else:
        raise SystemExit(f"unknown split {split!r}")
    assert not set(test) & set(dev), "a test clip is in the validation set"
    return [n for n in names if n not in test], test


def parse_sets(items) -> dict:
    """--set key=value (FinetuneConfig fields; values as JSON where they parse, else strings)."""
    out = {}
    for item in items or ():
        k, _, v = item.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def run_split(split: str, perfs: list[Path], args) -> dict:
    from dubtool.captures import train_on_captures
    from dubtool.train import FinetuneConfig

    with tempfile.TemporaryDirectory(prefix="bench_captures_") as tmp:
        caps = Path(tmp) / "captures"
        caps.mkdir()
        used, held = split_names(split, [p.stem for p in perfs])
        for p in perfs:
            if p.stem in used or p.stem in held:
                (caps / p.name).symlink_to(p.resolve())
        base_corpus = None if args.base_corpus == "none" else args.base_corpus
        t0 = time.time()
        share = {} if args.base_share is None else {"base_share": args.base_share}
        cfg = replace(FinetuneConfig(), **share, **parse_sets(args.set))
        run = train_on_captures(caps, Path(tmp) / "actor.pt", args.base, holdout=0.2, steps=args.steps,
                                time_limit_s=args.time_limit, base_corpus=base_corpus, heldout_names=held,
                                cfg=cfg, progress=False, log=log)
        wall = time.time() - t0
        card = run.card.read_text(encoding="utf-8")
        clean = clean_speech(args.base, run.out) if args.clean_speech else {}
    out = run.to_json()
    out.update(split=split, wall_s=round(wall, 1), card=card, clean_speech=clean, sets=parse_sets(args.set))
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


def plot(runs: dict[str, list[dict]], out: Path) -> None:
    """Per held-out clip mouth-opening r, one panel per test split: the shipped model and each fine-tune
    configuration in `runs` ({label: results of --json}) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    splits = [s for s in TEST_SPLITS if any(r["split"] == s for rs in runs.values() for r in rs)]
    fig, axes = plt.subplots(1, len(splits), figsize=(3.3 * len(splits), 3.6), squeeze=False, sharey=True)
    colors = ["#f2b79f", "#e8744f", "#7a3fb0"]
    for ax, split in zip(axes[0], splits):
        by_label = {lab: next((r for r in rs if r["split"] == split), None) for lab, rs in runs.items()}
        first = next(r for r in by_label.values() if r is not None)
        takes = [r["take"] for r in first["scores"]["per_take"]]
        x = np.arange(len(takes))
        width = 0.8 / (1 + len(runs))
        val = lambda v: np.nan if v is None else v
        ax.bar(x - 0.4 + width / 2, [val(r["base_mouth_r"]) for r in first["scores"]["per_take"]], width,
               label=f"shipped (median {first['scores']['base']['mouth_r']:.2f})", color="#9aa7b8")
        for i, (lab, res) in enumerate(by_label.items()):
            if res is None:
                continue
            rows = {r["take"]: r for r in res["scores"]["per_take"]}
            ax.bar(x - 0.4 + width * (i + 1.5), [val(rows[t]["fine_tuned_mouth_r"]) for t in takes], width,
                   label=f"{lab} (median {res['scores']['fine_tuned']['mouth_r']:.2f})", color=colors[i % len(colors)])
        ax.set_xticks(x, [t.replace("pcavs_", "").replace("videoretalking_", "vr_").replace("_Source", "")
                          for t in takes], rotation=35, ha="right", fontsize=7)
        ax.set_ylim(-0.3, 1.0)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"split {split}", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    axes[0][0].set_ylabel("held-out mouth-opening r (lag 0)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    from dubtool.train import FinetuneConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder of the realclips' .perf files")
    ap.add_argument("--base", default=None, help="checkpoint to fine-tune (default: the shipped one)")
    ap.add_argument("--split", nargs="+", choices=("select",) + TEST_SPLITS + ("tests",), default=["source"],
                    help="one or more splits, in turn (tests: every test split)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--base-corpus", default="auto", help="corpus folder to mix in, auto (the replay corpus, what "
                    "`dubtool train --captures` uses by default) or none (L2-SP only)")
    ap.add_argument("--base-share", type=float, default=None, help="share of each batch from the base corpus "
                    "(default: FinetuneConfig's; 0: no mix)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="a FinetuneConfig field (l2_base=1, "
                    "amplitude=tracked, ...): the configurations compared in docs/captures.md")
    ap.add_argument("--clean-speech", dest="clean_speech", action="store_true",
                    help="add the clean-speech closure check (forgetting) of both models")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", nargs="*", default=None, metavar="LABEL=FILE", help="draw the per-clip figure from "
                    "these --json files (no training) into --png")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    if args.plot:
        runs = {}
        for item in args.plot:  # LABEL=FILE.json or FILE.json
            label, _, path = item.rpartition("=")
            runs[label or Path(path).stem] = json.loads(Path(path).read_text())
        plot(runs, args.png or Path("captures_benchmark.png"))
        return
    perfs = sorted(args.cache.glob("*.perf"))
    if not perfs:
        sys.exit(f"no .perf files in {args.cache} (run `dubtool extract` on ../shared/realclips/*.mp4 into it)")
    results = []
    for s in [t for s in args.split for t in (TEST_SPLITS if s == "tests" else (s,))]:
        results.append(run_split(s, perfs, args))
        print(markdown(results[-1]), flush=True)
        if args.json:  # after every split: a long run keeps what it measured
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

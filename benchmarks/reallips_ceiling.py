"""How much of the real tracked mouth in ../shared/realclips can audio predict at all? A diagnostic for the
real-lips benchmark's target, not a model: a ridge regression from the clip's log-mel (±6 frames of context)
to its tracked inner-lip gap, fitted on the other clips and scored on the held-out one (leave one clip out),
with the benchmark's own score (Pearson r, best lag within ±3 frames). Nothing here is shipped or saved.

    python benchmarks/reallips_ceiling.py [--cache build/realclips] [--features mel|speech] [--json out.json]

From log-mel it scores median r 0.42, which was once read as the references' ceiling; from the speech encoder's
features that v6 reads (`--features speech`) 0.72 (2026-12-04): the ceiling was the log-mel's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONTEXT = tuple(range(-6, 7, 2))  # frames of mel context
RIDGE = 3000.0


def clip_features(perf, fps: float, features: str = "mel") -> tuple[np.ndarray, np.ndarray]:
    """(frames, features) with context, (frames,) z-scored tracked lip gap, at `fps`. features: "mel" (log-mel,
    80 bands) or "speech" (v6's front end: Whisper layer 3 on the shipped 96 axes, dubtool/speech_features.py)."""
    from dubtool import reference
    from dubtool.generate import audio_input

    ref = reference.reference_from_performance(perf)
    n = int(round(perf.audio.duration_s * fps))
    n = min(n, int(round(ref.animation.duration_s * fps)))
    gap = reference.resample_curve(ref.lip_gap, ref.animation.fps, fps, n)
    if features == "speech":
        from dubtool import speech_features

        mel = audio_input(perf.audio.samples, perf.audio.sample_rate, fps, speech_features.NAME,
                          speech_features.projection()[1].shape[1], 1)
    else:
        mel = audio_input(perf.audio.samples, perf.audio.sample_rate, fps, "mel", 80, 1)
    mel = mel[:n] if len(mel) >= n else np.pad(mel, ((0, n - len(mel)), (0, 0)), mode="edge")
    x = np.concatenate([np.roll(mel, k, axis=0) for k in CONTEXT], axis=1)
    return x, (gap - gap.mean()) / max(gap.std(), 1e-9)


def leave_one_out(xs: list[np.ndarray], ys: list[np.ndarray]) -> list[float]:
    from dubtool.reference import best_lag

    rs = []
    for i in range(len(xs)):
        xtr = np.concatenate([x for j, x in enumerate(xs) if j != i])
        ytr = np.concatenate([y for j, y in enumerate(ys) if j != i])
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        a = (xtr - mu) / sd
        w = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ ytr)
        rs.append(best_lag(((xs[i] - mu) / sd) @ w, ys[i])[1])
    return rs


def main(argv=None) -> int:
    import bench_reallips as bench

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=str(bench.DEFAULT_CLIPS))
    ap.add_argument("--cache", default=str(bench.DEFAULT_CACHE))
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--features", choices=("mel", "speech"), default="mel",
                    help="log-mel (v5's front end) or the speech encoder's features (v6's)")
    args = ap.parse_args(argv)
    names, xs, ys = [], [], []
    for video in sorted(Path(args.clips).glob("*.mp4")):
        perf = bench.load_or_extract(video, Path(args.cache))
        if perf.audio is None:
            continue
        x, y = clip_features(perf, args.fps, args.features)
        names.append(video.stem)
        xs.append(x)
        ys.append(y)
    rs = leave_one_out(xs, ys)
    res = {"benchmark": "reallips_ceiling", "features": args.features, "clips": len(rs), "median_r_best_lag": round(float(np.median(rs)), 3),
           "mean_r_best_lag": round(float(np.mean(rs)), 3), "per_clip": dict(zip(names, [round(r, 3) for r in rs]))}
    print(f"leave-one-clip-out ridge ({args.features} ±6 frames -> tracked lip gap), {len(rs)} clips: "
          f"median r {res['median_r_best_lag']:.2f}, mean {res['mean_r_best_lag']:.2f} (best lag ±3)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

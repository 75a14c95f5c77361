"""Validation figures of several checkpoints of one recipe (seeds), and the one they pick.

    python scripts/seed_spread.py runs/v4/seed0.pt runs/v4/seed1.pt ...

Reads each checkpoint's last validation row (stored in its meta by `dubtool train`): the corpus's
synthetic held-out splits (held-out espeak voices, held-out languages), which no benchmark scores.
The pick: the highest mean of (bilabial closure − share of open-vowel frames sealed) over both splits
(closure alone when a checkpoint predates the open-vowel figure), then the lowest lower-face error.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def last_validation(path: str) -> dict:
    meta = torch.load(path, map_location="cpu", weights_only=False)["meta"]
    row = dict(meta["history"][-1]) if meta.get("history") else {}
    row["seed"] = meta["config"]["train"]["seed"]
    return row


def main(paths: list[str]) -> None:
    rows = [(p, last_validation(p)) for p in paths]
    keys = ("val_voice/bilabial_closure", "val_lang/bilabial_closure", "val_voice/lower_mae", "val_lang/lower_mae",
            "val_voice/open_vowel_closed", "val_lang/open_vowel_closed")
    print("| checkpoint | seed | step | " + " | ".join(keys) + " |")
    print("|---|---:|---:|" + "---:|" * len(keys))
    for p, r in rows:
        print(f"| {p} | {r['seed']} | {r.get('step')} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in keys) + " |")
    for k in keys:
        v = np.array([r.get(k, np.nan) for _, r in rows], float)
        print(f"{k}: mean {np.nanmean(v):.3f}, spread {np.nanmin(v):.3f}..{np.nanmax(v):.3f}")
    def score(r):
        closure = np.nanmean([r.get(keys[0], np.nan), r.get(keys[1], np.nan)])
        sealed = [r.get(k, np.nan) for k in keys[4:]]
        if np.isfinite(sealed).any():
            closure -= np.nanmean(sealed)
        return closure, -np.nanmean([r.get(keys[2], np.nan), r.get(keys[3], np.nan)])

    best = max(rows, key=lambda pr: score(pr[1]))
    print(f"pick: {best[0]} (seed {best[1]['seed']})")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])

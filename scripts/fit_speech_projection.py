"""Fit models/speech_pca.npz: the fixed principal axes the Whisper layer-3 speech features are projected onto
(dubtool/speech_features.py), so a corpus of 1.5 hours of speech stays small enough to carry to a GPU machine.

Training material only: the first espeak training clips of the corpus config (its own languages, voices and
rates, no augmentation) and asterisk training prompts (sorted index % 5 != 0) of its real speakers. Nothing a
benchmark scores. Deterministic for a config.

    python scripts/fit_speech_projection.py configs/flow_v6.json [--clips 120] [--prompts 40] [--dims 96]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from dubtool import corpus as C
    from dubtool import speech_features as sf
    from dubtool.audio import load_audio, mel_frame_count
    from dubtool.espeak import synthesize
    from dubtool.fileio import atomic_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--prompts", type=int, default=40, help="asterisk training prompts per language")
    ap.add_argument("--dims", type=int, default=96)
    ap.add_argument("--out", type=Path, default=sf.PROJECTION)
    args = ap.parse_args(argv)
    cfg = C.CorpusConfig(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in json.loads(args.config.read_text())["corpus"].items()})
    rows = []
    for job in [j for j in C._espeak_jobs(cfg) if j["split"] == "train"][:args.clips]:
        rng = np.random.default_rng(job["seed"])
        text = " ".join(C.pseudo_sentence(C.load_sentences(job["lang"]), rng) for _ in range(2))
        syn = synthesize(text, job["voice"], job["rate"], job["pitch"], job["range"], job["variant"])
        x = syn.audio.samples
        rows.append(sf.raw_rows(x, cfg.fps, (0, mel_frame_count(len(x), sf.SAMPLE_RATE, cfg.fps)), 1)[:, 0])
    for lang in cfg.asterisk_languages:
        for _, wav in C.asterisk_training_prompts(lang)[:args.prompts]:
            a = load_audio(wav)
            rows.append(sf.raw_rows(a.samples, cfg.fps, (0, mel_frame_count(len(a.samples), sf.SAMPLE_RATE, cfg.fps)), 1)[:, 0])
    x = np.concatenate(rows).astype(np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2 / (s ** 2).sum()
    axes = vt[:args.dims].T
    with atomic_path(args.out, suffix=".npz") as tmp:
        np.savez(tmp, mean=mean.astype(np.float32), axes=axes.astype(np.float32),
                 explained=np.float32(var[:args.dims].sum()), frames=np.int64(len(x)))
    print(f"{len(x)} frames from {len(rows)} clips; {args.dims} axes keep {var[:args.dims].sum():.3f} of the variance "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

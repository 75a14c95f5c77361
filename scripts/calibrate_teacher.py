"""Measure how much the viseme teacher moves each lower-face channel on real speech, against real ARKit
speech statistics, and print the ratios (what `teacher.REAL_SPEECH_GAIN` was calibrated with).

    .venv/bin/python scripts/calibrate_teacher.py --reference ../shared/reference/arkit_speech_stats.md

Speech: 40 asterisk training prompts per language (en, fr, es; never the eval set's), phones by
`phonealign` (pocketsphinx), the teacher with its neutral style at 30 fps. Reference: a markdown table
with `| channel | mean | std |` rows (e.g. the BEAT iPhone capture statistics). Standard deviations over
all frames, speech and pauses alike, as in the reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dubtool.arkit import CHANNEL_NAMES, LOWER_IDX  # noqa: E402
from dubtool.audio import load_audio  # noqa: E402
from dubtool.corpus import asterisk_training_prompts  # noqa: E402
from dubtool.phonealign import align_phonemes  # noqa: E402
from dubtool.reference import parse_stats_markdown  # noqa: E402
from dubtool.teacher import lower_face_from_phonemes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="markdown table of real ARKit speech std per channel")
    ap.add_argument("--per-lang", type=int, default=40)
    args = ap.parse_args()
    ref = {name: std for name, (_, std) in parse_stats_markdown(args.reference.read_text()).items()}
    values, seconds = [], 0.0
    for lang in ("en", "fr", "es"):
        prompts = asterisk_training_prompts(lang)
        if not prompts:
            raise SystemExit(f"asterisk-core-sounds-{lang} is not installed (scripts/setup.sh --dev)")
        for k in np.random.default_rng(0).choice(len(prompts), min(args.per_lang, len(prompts)), replace=False):
            text, wav = prompts[k]
            audio = load_audio(wav)
            try:
                phones = align_phonemes(audio, text, lang)
            except Exception as e:  # a prompt the aligner can't take is skipped, not fatal
                print(f"skipped {wav.name}: {e}", file=sys.stderr)
                continue
            values.append(lower_face_from_phonemes(phones, audio.duration_s, 30.0).values)
            seconds += audio.duration_s
    v = np.concatenate(values)
    print(f"{len(values)} prompts, {seconds:.0f} s of real speech\n")
    print("| channel | teacher std | real std | ratio |\n|---|---:|---:|---:|")
    for i in LOWER_IDX:
        name = CHANNEL_NAMES[i]
        if name in ref:
            s = float(v[:, i].std())
            print(f"| {name} | {s:.3f} | {ref[name]:.3f} | {s / ref[name]:.2f} |")


if __name__ == "__main__":
    main()

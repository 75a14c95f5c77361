"""Calibrate a generator's articulation to real ARKit speech: one multiplier per lower-face channel, stored
in the checkpoint (meta["articulation_gain"]) and applied by `Generator.generate` to its output.

How: localize (flow mode, no transcript) real recorded speech the corpus trains on -- Debian's asterisk
prompts of the training split (sorted index % 5 != 0; en, fr, es, ru) -- onto the bundled procedural source,
take each lower-face channel's standard deviation over the speech frames, and set
    gain = clip(real ARKit std / generated std, GAIN_MIN, GAIN_MAX)
with the real std from ../shared/reference/arkit_speech_stats.md (calibration material, never committed:
only the resulting gains are). Channels the model barely moves (std < MIN_STD: the lateral jaw and mouth)
keep gain 1: amplifying what is not modelled would only amplify noise; so do smile and frown (expression,
not articulation). mouthClose takes jawOpen's gain, so a
seal (mouthClose ~ jawOpen in ARKit's convention) stays a seal. No benchmark material is read: the real
talking-face clips, the held-out prompts and the unseen-language sets score the result afterwards.

Usage: calibrate_articulation.py [--model models/dubtool_flow_v6.pt] [--per-lang 40] [--out OUT.pt]
(--out defaults to writing the gains into --model in place, atomically). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

GAIN_MIN, GAIN_MAX = 0.5, 2.0
MIN_STD = 0.005
LANGS = ("en", "fr", "es", "ru")
# Smiling and frowning are the performance's expression, not articulation: their real std (long monologues,
# emotion included) is no target for lips driven by audio, so they are left as the network makes them.
EXPRESSION_CHANNELS = ("mouthSmile", "mouthFrown")
DEFAULT_STATS = ROOT.parent / "shared" / "reference" / "arkit_speech_stats.md"


def pick_evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def training_prompt_wavs(lang: str, k: int) -> list[Path]:
    from dubtool import corpus

    if lang in ("en", "fr", "es"):  # with transcripts: skips the prompts that hold no speech
        return [w for _, w in pick_evenly(corpus.asterisk_training_prompts(lang), k)]
    wavs = [w for i, (_, w) in enumerate(corpus.asterisk_prompt_wavs(lang)) if not corpus.is_eval_prompt(i)]
    return pick_evenly(wavs, k)


def speech_values(generator, wavs: list[Path]) -> np.ndarray:
    """Generated weights (frames x 61) over the speech frames of every prompt, localized onto a
    procedural source performance of the prompt's length."""
    from bench_localize import performance_for

    from dubtool import reference as refmod
    from dubtool.audio import load_audio
    from dubtool.errors import SilenceError
    from dubtool.localize import LocalizeOptions, localize
    from dubtool.timemap import uniform_timemap

    rows = []
    for w in wavs:
        dub = load_audio(w)
        if dub.duration_s < 0.5:
            continue
        src = performance_for(dub)
        tm = uniform_timemap(src.duration_s, dub.duration_s, "the prompt itself")
        try:
            anim = localize(src, dub, LocalizeOptions(lang="en", source_lang="en", model="flow"),
                            generator=generator, timemap=tm).animation
        except SilenceError:  # a few asterisk prompts hold no speech
            continue
        mask = refmod.speech_mask(dub.samples, dub.sample_rate, anim.fps, anim.values.shape[0])
        rows.append(anim.values[mask])
    return np.concatenate(rows)


def gains_from(values: np.ndarray, real_std: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    from dubtool.arkit import LOWER_FACE, index

    gen_std = {n: float(values[:, index(n)].std()) for n in LOWER_FACE}
    gains = {}
    for n in LOWER_FACE:
        if n not in real_std or gen_std[n] < MIN_STD or n.startswith(EXPRESSION_CHANNELS):
            continue
        gains[n] = float(np.clip(real_std[n] / gen_std[n], GAIN_MIN, GAIN_MAX))
    if "jawOpen" in gains:
        gains["mouthClose"] = gains["jawOpen"]
    return {n: round(g, 3) for n, g in gains.items()}, gen_std


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "dubtool_flow_v6.pt"))
    ap.add_argument("--per-lang", type=int, default=40)
    ap.add_argument("--reference-stats", default=str(DEFAULT_STATS))
    ap.add_argument("--out", default=None, help="write the calibrated checkpoint here (default: --model in place)")
    args = ap.parse_args()

    import torch

    from dubtool import reference as refmod
    from dubtool.fileio import atomic_path
    from dubtool.generate import load_model

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    stats = {n: s for n, (_, s) in refmod.parse_stats_markdown(Path(args.reference_stats).read_text()).items()}
    generator = load_model(args.model, backend="torch")
    generator.meta.pop("articulation_gain", None)  # calibrate the raw network output
    wavs = [w for lang in LANGS for w in training_prompt_wavs(lang, args.per_lang)]
    print(f"calibrating on {len(wavs)} training prompts ({', '.join(LANGS)})", file=sys.stderr)
    values = speech_values(generator, wavs)
    gains, gen_std = gains_from(values, stats)

    ckpt = torch.load(args.model, map_location="cpu", weights_only=False)
    ckpt.setdefault("meta", {})["articulation_gain"] = gains
    ckpt["meta"]["articulation_calibration"] = (
        f"scripts/calibrate_articulation.py: {len(wavs)} asterisk training prompts ({', '.join(LANGS)}), "
        f"{values.shape[0]} speech frames; gain = real ARKit speech std / generated std, clipped to "
        f"{GAIN_MIN}..{GAIN_MAX}; mouthClose follows jawOpen")
    out = Path(args.out or args.model)
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(ckpt, tmp)
    try:  # the ONNX Runtime sidecar is tagged with the .pt's hash: a stale one would be ignored
        from dubtool.generate import export_onnx

        export_onnx(out)
    except ImportError:
        print(f"onnx is not installed: re-export the sidecar with `python -m dubtool.train onnx {out}`",
              file=sys.stderr)
    print("| channel | generated std | ARKit std | gain |\n|---|---:|---:|---:|")
    for n in sorted(gen_std):
        g = gains.get(n)
        print(f"| {n} | {gen_std[n]:.3f} | {stats.get(n, float('nan')):.3f} | {'-' if g is None else f'{g:.2f}'} |")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

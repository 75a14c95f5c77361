"""Real-speech VALIDATION set: two real speakers the corpus never read, in languages it trained on, for picking
recipes, seeds and inference-time parameters on real speech without touching a scored set.

Until now every pick was made on the corpus's synthetic validation splits (espeak voices), and the
network's real-speech failures (false closures on open vowels, docs/eval.md) could only be seen on sets that
are scored, so nothing could be tuned against them. This set fills that gap:

  asterisk-prompt-fr-armelle   Armelle Desjardins, French (France), 2007 prompts
  asterisk-prompt-es-co        a Colombian Spanish speaker

Both packages install over /usr/share/asterisk/sounds/{fr,es}, which the corpus's own prompts (the
asterisk-core-sounds fr/es packages) also use, so they are NOT installed: the .deb files are fetched with
`apt-get download` and unpacked with `dpkg -x` into --root. They carry no transcripts of their own; their
prompt names are the core prompts' names, whose transcripts (core-sounds-<lang>.txt.gz) are often but not
always the same words. A prompt is kept only when its duration agrees with the core prompt of the same name
within --max-ratio (either way) and its transcript has at least two words: the wording is then very
likely the same. The teacher column (with the transcript) shows how well the transcripts fit.

Scored exactly as bench_unseen_lang.py (closure, open-vowel frames closed, of them > 70 ms from a
/p b m/, jaw-envelope r). This set is for validation: never train on it, and do not report it as a target.

    python benchmarks/bench_realval.py [--model-path PATH] [--per-lang 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_unseen_lang as unseen  # noqa: E402  (same scoring, same source performance)

# language -> (Debian package, folder inside its sounds/, the core package's speaker folder of the same prompts)
PACKAGES = {"fr": ("asterisk-prompt-fr-armelle", "fr", "fr_CA_f_June"),
            "es": ("asterisk-prompt-es-co", "es", "es_MX_f_Allison")}
CORE_SOUNDS = Path("/usr/share/asterisk/sounds")
GSM_BYTES_PER_S = 1650.0  # GSM 06.10: 33-byte frames of 20 ms


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def unpack(root: Path, package: str) -> Path:
    """The package's files unpacked under root/package (fetched with apt-get download once)."""
    dest = root / package
    if not (dest / "usr").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        debs = sorted(root.glob(f"{package}_*.deb"))
        if not debs:
            subprocess.run(["apt-get", "download", package], cwd=root, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            debs = sorted(root.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(dest)], check=True)
    return dest


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def lines_for(lang: str, root: Path, max_ratio: float, limit: int) -> list[tuple[Path, str]]:
    """(audio, transcript) of the prompts whose duration matches the core prompt of the same name."""
    from dubtool.corpus import asterisk_transcripts, is_spoken

    package, folder, core = PACKAGES[lang]
    sounds = unpack(root, package) / "usr" / "share" / "asterisk" / "sounds" / folder
    texts = asterisk_transcripts(lang)
    out = []
    for gsm in sorted(sounds.rglob("*.gsm")):
        key = str(gsm.relative_to(sounds).with_suffix(""))
        core_wav = CORE_SOUNDS / core / f"{key}.wav"
        text = texts.get(key)
        if not is_spoken(text) or "[" in text or not core_wav.is_file():
            continue
        ratio = (gsm.stat().st_size / GSM_BYTES_PER_S) / wav_seconds(core_wav)
        if 1 / max_ratio <= ratio <= max_ratio:
            out.append((gsm, text))
    return unseen.spread(out, limit)


def run(args) -> dict:
    from dubtool.localize import get_generator

    sets = {f"{lang} ({PACKAGES[lang][0]})": (lang, lines_for(lang, Path(args.root), args.max_ratio, args.per_lang))
            for lang in PACKAGES}
    generator = get_generator(args.model_path, args.device)
    if args.guidance is not None or args.temperature is not None:  # sampler settings to validate
        from dataclasses import replace

        generator.sampler = replace(generator.sampler, **{k: v for k, v in
                                    (("guidance", args.guidance), ("temperature", args.temperature)) if v is not None})
    report = {"benchmark": "realval", "model": str(args.model_path or "models/dubtool_flow_v6.pt"),
              "max_ratio": args.max_ratio, "sampler": vars(generator.sampler)}
    report.update(unseen.score_sets(sets, generator, unseen.source_performance(Path(args.cache)), args.seed))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", default=None, help="flow checkpoint (default: the shipped one)")
    ap.add_argument("--root", default="/tmp/dubtool_realval", help="where the two .deb files are unpacked")
    ap.add_argument("--max-ratio", type=float, default=1.2, help="duration agreement with the core prompt")
    ap.add_argument("--per-lang", type=int, default=60, help="at most this many lines per speaker (0 = all)")
    ap.add_argument("--cache", default="/tmp/dubtool_bench", help="where the source .perf is cached")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=None, help="override the checkpoint's sampler guidance")
    ap.add_argument("--temperature", type=float, default=None, help="override the sampler's noise temperature")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    res = run(args)
    unseen.write_report(res, unseen.markdown(res, title="real-speech validation set"), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

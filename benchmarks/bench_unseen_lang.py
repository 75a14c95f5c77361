"""Unseen-language real-speech benchmark: real recorded speech, with transcripts, in languages the model
never trained on (it trained on real en/fr/es/ru Asterisk prompts and espeak en, en-gb, fr, es, de, nl,
pl, ru; espeak it/pt were its validation voices).

Sets (Debian packages, installed by `scripts/setup.sh --dev`; KEEP THEM OUT OF TRAINING — corpus.py must
not read these paths, see docs/eval.md):
  klettres-data                 /usr/share/klettres/<lang>/syllab/*.ogg  recorded syllables (names in
                                <lang>/sounds.xml): it, pt-br, cs, da, hu, lt, uk, he, id
  asterisk-core-sounds-it(-wav) /usr/share/asterisk/sounds/it/*.wav      Italian voice prompts, transcripts in
                                /usr/share/doc/asterisk-core-sounds-it/core-sounds-it.txt.gz
  (fillets-ng-data-cs / -nl: the project's external check, deliberately NOT here: no tuning on them.)

Per line: phone timings from the transcript (`dubtool.phonealign.align_phonemes`), then for the shipped
flow model (audio only; `localize` with examples/actor_en.mp4 as the source performance, identity time
map) and for the teacher with the transcript: /p b m/ closure rate, open-vowel frames wrongly closed,
jawOpen-envelope Pearson r. Per-language and pooled figures; markdown on stdout, --json for all.

    python benchmarks/bench_unseen_lang.py [--model-path PATH] [--per-lang 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KLETTRES = Path("/usr/share/klettres")
ASTERISK_IT = Path("/usr/share/asterisk/sounds/it")
ASTERISK_IT_TEXT = Path("/usr/share/doc/asterisk-core-sounds-it/core-sounds-it.txt.gz")
# klettres folder -> --lang code; languages neither trained on (real or espeak) nor an external check.
KLETTRES_LANGS = {"it": "it", "pt_BR": "pt-br", "cs": "cs", "da": "da", "hu": "hu", "lt": "lt", "uk": "uk",
                  "he": "he", "id": "id"}
# Paths a training corpus must never read (docs/eval.md repeats them).
HELD_OUT_PATHS = (str(KLETTRES), str(ASTERISK_IT), "/usr/share/games/fillets-ng (fillets-ng-data-cs, -nl)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def klettres_lines(folder: str, limit: int) -> list[tuple[Path, str]]:
    """(audio, transcript) of one language's recorded syllables, from its sounds.xml."""
    xml = KLETTRES / folder / "sounds.xml"
    root = ET.fromstring(xml.read_text(encoding="utf-8-sig"))
    out = []
    for syl in root.iter("syllables"):
        for s in syl.iter("sound"):
            path = KLETTRES / s.get("file", "")
            name = (s.get("name") or "").strip().lower()  # lower case: espeak spells all-caps words out
            if path.is_file() and name:
                out.append((path, name))
    return out[:limit] if limit else out


def spread(lines: list, limit: int) -> list:
    """At most `limit` of the lines (0 = all), every k-th: a spread over the whole list rather than its
    alphabetical start."""
    if limit and len(lines) > limit:
        return lines[:: max(1, len(lines) // limit)][:limit]
    return lines


def asterisk_it_lines(limit: int) -> list[tuple[Path, str]]:
    """(audio, transcript) of Italian Asterisk prompts with a plain-text transcript (no [sound] notes)."""
    out = []
    with gzip.open(ASTERISK_IT_TEXT, "rt", encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            m = re.match(r"^([\w/-]+):\s*(.+)$", line.strip())
            if not m or "[" in m.group(2) or "?" in m.group(2).replace("?.", "").strip("?"):
                continue
            path = ASTERISK_IT / (m.group(1) + ".wav")
            if path.is_file() and len(m.group(2).split()) >= 3:
                out.append((path, m.group(2)))
    return spread(out, limit)


def source_performance(cache: Path):
    from dubtool.performance import load_performance, save_performance

    perf_path = cache / "actor_en.perf"
    if not perf_path.is_file():
        from dubtool.extract import extract

        cache.mkdir(parents=True, exist_ok=True)
        save_performance(extract(ROOT / "examples" / "actor_en.mp4"), perf_path)
    return load_performance(perf_path)


# Open-vowel frames this close to a /p b m/ span are where real lips are already closing (they lead the sound
# by ~50 ms) or still opening; the "far" figure counts only the others.
NEAR_BILABIAL_S = 0.07


def score_line(anim, audio, phonemes) -> dict:
    from dubtool import metrics
    from dubtool.audio import rms_envelope
    from dubtool.reference import pearson

    checks = metrics.bilabial_closures(anim, phonemes, anim.fps)
    closed, open_frames = metrics.open_vowel_false_closures(anim, phonemes, anim.fps)
    far_closed, far_frames = metrics.open_vowel_false_closures(anim, phonemes, anim.fps,
                                                               away_from_bilabials_s=NEAR_BILABIAL_S)
    env = rms_envelope(audio.samples, audio.sample_rate, anim.fps).astype(np.float64)
    n = min(len(env), anim.num_frames)
    return {"bilabials": len(checks), "closed": sum(c.closed for c in checks),
            "min_gaps": [round(c.min_gap, 3) for c in checks if math.isfinite(c.min_gap)],
            "open_vowel_frames": open_frames, "open_vowel_closed": closed,
            "far_open_vowel_frames": far_frames, "far_open_vowel_closed": far_closed,
            "jaw_env_r": pearson(anim.values[:n, metrics.JAW_OPEN], env[:n])}


def summarise(items: list[dict]) -> dict:
    b = sum(i["bilabials"] for i in items)
    o = sum(i["open_vowel_frames"] for i in items)
    fo = sum(i.get("far_open_vowel_frames", 0) for i in items)
    rs = [i["jaw_env_r"] for i in items if math.isfinite(i["jaw_env_r"])]
    gaps = [g for i in items for g in i["min_gaps"]]
    return {"lines": len(items), "bilabials": b,
            "closure": sum(i["closed"] for i in items) / b if b else math.nan,
            "open_vowel_frames": o,
            "open_vowel_closed": sum(i["open_vowel_closed"] for i in items) / o if o else math.nan,
            "far_open_vowel_closed": sum(i.get("far_open_vowel_closed", 0) for i in items) / fo if fo else math.nan,
            "jaw_env_r": float(np.mean(rs)) if rs else math.nan,
            "median_min_gap_at_pbm": float(np.median(gaps)) if gaps else math.nan}


def score_sets(sets: dict[str, tuple[str, list[tuple[Path, str]]]], generator, source, seed: int = 0) -> dict:
    """Score each set {name: (--lang code, [(audio, transcript)])}: the flow model (audio only, `source` as the
    performance, identity time map) and the teacher with the transcript. Lines that fail to load or align,
    or run longer than the source, are skipped and counted."""
    from dubtool.audio import load_audio
    from dubtool.baselines import teacher_without_source
    from dubtool.errors import DubtoolError
    from dubtool.localize import LocalizeOptions, localize
    from dubtool.phonealign import align_phonemes
    from dubtool.timemap import uniform_timemap

    report = {"languages": {}, "files": {}}
    t_gen, speech_s = 0.0, 0.0
    pooled: dict[str, list] = {"flow": [], "teacher": []}
    for name, (code, lines) in sets.items():
        per = {"flow": [], "teacher": []}
        used, skipped = [], 0
        for path, text in lines:
            try:
                audio = load_audio(path, what="speech")
                phon = align_phonemes(audio, text, code)
                if audio.duration_s > source.duration_s:
                    raise DubtoolError("longer than the source performance")
                t0 = time.perf_counter()
                opts = LocalizeOptions(lang=code, source_lang="en", model="flow", seed=seed)
                flow = localize(source, audio, opts, generator=generator,
                                timemap=uniform_timemap(audio.duration_s, audio.duration_s, "identity")).animation
            except DubtoolError as e:
                skipped += 1
                log(f"  skip {path.name}: {e}")
                continue
            t_gen += time.perf_counter() - t0
            speech_s += audio.duration_s
            teacher = teacher_without_source(phon, flow.num_frames, generator.fps)
            per["flow"].append(score_line(flow, audio, phon))
            per["teacher"].append(score_line(teacher, audio, phon))
            used.append(str(path))
        for sys_ in per:
            pooled[sys_].extend(per[sys_])
        report["languages"][name] = {sys_: summarise(items) for sys_, items in per.items()}
        report["languages"][name]["skipped"] = skipped
        report["files"][name] = used
        f, t = report["languages"][name]["flow"], report["languages"][name]["teacher"]
        log(f"{name}: {f['lines']} lines, {f['bilabials']} /p b m/: closure flow {f['closure']:.2f} teacher "
            f"{t['closure']:.2f}; open vowels closed flow {f['open_vowel_closed']:.2f}; jaw-env r {f['jaw_env_r']:.2f}")
    if len(sets) > 1:
        report["languages"]["pooled"] = {sys_: summarise(items) for sys_, items in pooled.items()}
    report["speech_s"] = round(speech_s, 1)
    report["generation_realtime_factor"] = round(speech_s / max(t_gen, 1e-9), 1)
    return report


def run(args) -> dict:
    from dubtool.localize import get_generator

    sets: dict[str, tuple[str, list[tuple[Path, str]]]] = {}
    for folder, code in KLETTRES_LANGS.items():
        if (KLETTRES / folder / "sounds.xml").is_file():
            sets[f"{code} (klettres syllables)"] = (code, klettres_lines(folder, args.per_lang))
    if ASTERISK_IT_TEXT.is_file():
        sets["it (asterisk prompts)"] = ("it", asterisk_it_lines(args.per_lang))
    if args.langs:
        keep = {c.strip() for c in args.langs.split(",")}
        sets = {k: v for k, v in sets.items() if k.split()[0] in keep}
    if not sets:
        raise SystemExit("no unseen-language sets installed: run scripts/setup.sh --dev (klettres-data, "
                         "asterisk-core-sounds-it-wav)")
    generator = get_generator(args.model_path, args.device)
    report = {"benchmark": "unseen_lang", "model": str(args.model_path or "models/dubtool_flow_v6.pt"),
              "held_out_paths": list(HELD_OUT_PATHS)}
    report.update(score_sets(sets, generator, source_performance(Path(args.cache)), args.seed))
    return report


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def markdown(res: dict, title: str = "unseen-language real speech") -> str:
    lines = [f"# {title}: {res['model']} ({res['speech_s']} s)", "",
             "closure = /p b m/ with the lips sealed (normalized gap < 0.2); open-vowel closed = fraction of "
             "open-vowel frames with the lips sealed; flow = no transcript, teacher = with transcript.", "",
             "| set | lines | /p b m/ | closure flow | closure teacher | open-vowel closed flow | teacher | "
             "of them > 70 ms from a /p b m/, flow | teacher | "
             "jaw-envelope r flow | teacher | median min gap at /p b m/ flow |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, d in res["languages"].items():
        f, t = d["flow"], d["teacher"]
        lines.append(f"| {name} | {f['lines']} | {f['bilabials']} | {_f(f['closure'])} | {_f(t['closure'])} | "
                     f"{_f(f['open_vowel_closed'])} | {_f(t['open_vowel_closed'])} | "
                     f"{_f(f.get('far_open_vowel_closed'))} | {_f(t.get('far_open_vowel_closed'))} | {_f(f['jaw_env_r'])} | "
                     f"{_f(t['jaw_env_r'])} | {_f(f['median_min_gap_at_pbm'])} |")
    return "\n".join(lines) + "\n"


def write_report(res: dict, md: str, args) -> None:
    """The markdown table on stdout; the report as --json and the table as --md, written atomically."""
    from dubtool.fileio import write_text_atomic

    print(md, end="")
    if args.json:
        write_text_atomic(args.json, json.dumps(res, indent=1, ensure_ascii=False, default=float) + "\n")
    if args.md:
        write_text_atomic(args.md, md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", default=None, help="flow checkpoint (default: the shipped one)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--per-lang", type=int, default=40, help="at most this many lines per set (0 = all)")
    ap.add_argument("--langs", default="", help="only these codes, comma-separated")
    ap.add_argument("--cache", default="/tmp/dubtool_bench", help="where the source .perf is cached")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    res = run(args)
    write_report(res, markdown(res), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

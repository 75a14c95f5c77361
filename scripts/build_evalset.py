#!/usr/bin/env python
"""Build dubtool's held-out evaluation set: real recorded dub lines never used in training, each paired
with a source line in another language and a source performance synthesized for it.

    .venv/bin/python scripts/build_evalset.py [--out build/evalset] [--per-lang 40] [--jobs 2]

Dub lines (what is evaluated) come only from real recordings:
  * Debian asterisk-core-sounds prompts (/usr/share/asterisk/sounds/<lang>_*/, transcripts in
    /usr/share/doc/asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz): English, French and Spanish
    prompts whose index in the sorted list of that language's wavs is a multiple of 5 (the training corpus
    uses the others, see dubtool/corpus.py: same speakers, other prompts);
  * pocketsphinx-testdata recordings with transcripts (librivox and cards, English).
Source lines: the same prompt id in another language (the en prompt for an fr/es item, the fr prompt for
an en item; for pocketsphinx items the fr prompt of closest duration). The source audio is real speech, but
no video of these speakers exists, so the source PERFORMANCE is synthesized: lower face by the teacher
(dubtool.teacher) on the source's own phonemes, upper face/head/eyes by dubtool.upperface's procedural
model. Metrics against the source (FDD, upper-face correlation, leak) therefore measure how faithfully the
pipeline carries a performance over, not how real that performance is.

Per item it writes items/<id>/{dub.wav, phonemes.json, source.perf, timemap.json} and finally
manifest.json (atomically, so a half-built set has no manifest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dubtool.corpus import (ASTERISK_DIRS as LANG_DIRS, asterisk_dir, asterisk_prompt_wavs, asterisk_text_file,
                            asterisk_transcripts, is_eval_prompt, is_spoken as spoken)

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
MANIFEST_VERSION = 1
FPS = 30.0
MIN_S, MAX_S = 1.0, 12.0


def transcripts(lang: str) -> dict[str, str]:
    """Prompt id (relative path without .wav, e.g. 'digits/5') -> transcript."""
    path = asterisk_text_file(lang)
    if not path.is_file():
        sys.exit(f"error: {path} not found; install the asterisk-core-sounds-{lang} package "
                 f"(apt-get install asterisk-core-sounds-{lang})")
    return asterisk_transcripts(lang)


def prompt_wavs(lang: str) -> list[tuple[str, Path]]:
    """(prompt id, wav) sorted by relative path: the order the train/eval split indexes prompts in."""
    d = asterisk_dir(lang)
    if not d.is_dir():
        sys.exit(f"error: {d} not found; install asterisk-core-sounds-{lang}-wav")
    return asterisk_prompt_wavs(lang)


def held_out(lang: str) -> list[tuple[str, Path]]:
    """Prompts of `lang` the training corpus never uses (dubtool.corpus.is_eval_prompt)."""
    return [(k, w) for i, (k, w) in enumerate(prompt_wavs(lang)) if is_eval_prompt(i)]


def held_out_english() -> list[tuple[str, Path]]:
    return held_out("en")


def pocketsphinx_lines() -> list[tuple[str, Path, str]]:
    """(id, wav, transcript) for the pocketsphinx-testdata recordings that ship a transcription."""
    out = []
    for sub in ("librivox", "cards"):
        tfile = POCKETSPHINX / sub / ("transcription" if sub == "librivox" else f"{sub}.transcription")
        if not tfile.is_file():
            continue
        for line in tfile.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
            if not m:
                continue
            wav = POCKETSPHINX / sub / f"{m.group(2).strip()}.wav"
            if wav.is_file():
                out.append((f"{sub}-{wav.stem}", wav, m.group(1).strip()))
    return out


def wav_duration(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return info.frames / info.samplerate


def _evenly(items: list, n: int | None) -> list:
    if n is None or len(items) <= n:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def plan_items(per_lang: int | None) -> list[dict]:
    """Every eval item (before synthesis): dub wav/text/lang and source wav/text/lang."""
    texts = {lang: transcripts(lang) for lang in LANG_DIRS}
    wavs = {lang: dict(prompt_wavs(lang)) for lang in LANG_DIRS}

    def ok(lang, key):
        w = wavs[lang].get(key)
        return w is not None and spoken(texts[lang].get(key)) and MIN_S <= wav_duration(w) <= MAX_S

    plan: list[dict] = []
    en = []
    for key, w in held_out_english():
        if not ok("en", key):
            continue
        src_lang = next((l for l in ("fr", "es") if ok(l, key)), None)
        if src_lang:
            en.append(dict(corpus="asterisk", key=key, lang="en", dub=w, text=texts["en"][key],
                           source_lang=src_lang, source=wavs[src_lang][key], source_text=texts[src_lang][key]))
    plan += _evenly(en, per_lang)
    for lang in ("fr", "es"):
        rows = [dict(corpus="asterisk", key=key, lang=lang, dub=w, text=texts[lang][key], source_lang="en",
                     source=wavs["en"][key], source_text=texts["en"][key])
                for key, w in held_out(lang) if ok(lang, key) and ok("en", key)]
        plan += _evenly(rows, per_lang)
    fr_pool = [(key, wav_duration(w)) for key, w in sorted(wavs["fr"].items()) if ok("fr", key)]
    for ident, w, text in pocketsphinx_lines():
        d = wav_duration(w)
        if not MIN_S <= d <= 2 * MAX_S or not fr_pool:
            continue
        key = min(fr_pool, key=lambda kd: abs(kd[1] - d))[0]
        plan.append(dict(corpus="pocketsphinx", key=ident, lang="en", dub=w, text=text, source_lang="fr",
                         source=wavs["fr"][key], source_text=texts["fr"][key]))
    for i, p in enumerate(plan):
        p["id"] = f"{p['lang']}-{p['corpus']}-{re.sub(r'[^A-Za-z0-9]+', '_', p['key'])}"
        p["seed"] = i
    return plan


def synthesize_performance(source_audio, phonemes, fps: float, rng: np.random.Generator, meta: dict):
    """A Performance for a source line that has audio but no video: teacher lower face on its phonemes,
    procedural upper face/head/eyes; landmarks are the rig posed by those curves (canonical space; the
    image landmarks are a plain orthographic projection of the head-rotated mesh)."""
    from dubtool.arkit import EYE_ROT_IDX, HEAD_IDX, LOWER_IDX, UPPER_IDX, Animation
    from dubtool.performance import NUM_LANDMARKS, Performance
    from dubtool.rig import LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR, apply_head_rotation, head_rotation_matrix, load_rig
    from dubtool.teacher import lower_face_from_phonemes
    from dubtool.upperface import procedural_upper_face

    duration = source_audio.duration_s
    n = int(round(duration * fps))
    lower = np.asarray(lower_face_from_phonemes(phonemes, duration, fps, rng=rng).values)[:n]
    from dubtool.audio import rms_envelope

    activity = rms_envelope(source_audio.samples, source_audio.sample_rate, fps)
    upper_face = procedural_upper_face(duration, fps, rng, speech_activity=activity)
    upper = np.asarray(getattr(upper_face, "animation", upper_face).values)[:n]
    n = min(len(lower), len(upper))
    v = np.zeros((n, 61), np.float32)
    v[:, LOWER_IDX] = lower[:n, LOWER_IDX]
    perf_idx = np.concatenate([UPPER_IDX, HEAD_IDX, EYE_ROT_IDX])
    v[:, perf_idx] = upper[:n, perf_idx]
    anim = Animation(v, fps).clamped()

    rig = load_rig()
    mesh = rig.pose(anim.values)  # (T,468,3) canonical
    iris = [mesh[:, list(RIGHT_EYE_CONTOUR)].mean(axis=1), mesh[:, list(LEFT_EYE_CONTOUR)].mean(axis=1)]
    canonical = np.concatenate([mesh] + [np.repeat(c[:, None], 5, axis=1) for c in iris], axis=1)
    assert canonical.shape[1] == NUM_LANDMARKS
    posed = apply_head_rotation(canonical, anim.values)
    image = np.stack([0.5 + posed[..., 0] / 40.0, 0.5 - posed[..., 1] / 40.0, posed[..., 2] / 40.0], axis=-1)
    head = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    head[:, :3, :3] = head_rotation_matrix(anim.values[:, HEAD_IDX[0]], anim.values[:, HEAD_IDX[1]],
                                           anim.values[:, HEAD_IDX[2]])
    head[:, 2, 3] = -40.0
    return Performance(image.astype(np.float32), canonical.astype(np.float32), head, anim, np.ones(n, bool),
                       np.ones(n, np.float32), source_audio, dict(meta, synthetic=True, fps=fps))


def build_item(p: dict, out: Path) -> dict:
    """Synthesize and write one item; returns its manifest entry."""
    from dubtool.align import AlignConfig, align
    from dubtool.audio import load_audio, require_speech, write_wav
    from dubtool.evaluate import save_phonemes_json
    from dubtool.lang import voice_for
    from dubtool.performance import save_performance
    from dubtool.phonealign import align_phonemes
    from dubtool.timemap import save_timemap

    d = out / "items" / p["id"]
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1000 + p["seed"])
    dub = load_audio(p["dub"])
    require_speech(dub, str(p["dub"]))
    source = load_audio(p["source"])
    dub_ph = list(align_phonemes(dub, p["text"], p["lang"]))
    src_ph = list(align_phonemes(source, p["source_text"], p["source_lang"]))
    perf = synthesize_performance(source, src_ph, FPS, rng, {"source": str(p["source"]),
                                                               "transcript": p["source_text"]})
    tm = align(source, dub, AlignConfig(), p["source_text"], p["text"], voice_for(p["source_lang"]),
               voice_for(p["lang"]))
    write_wav(dub, d / "dub.wav")
    save_phonemes_json(dub_ph, d / "phonemes.json")
    save_performance(perf, d / "source.perf")
    save_timemap(tm, d / "timemap.json")
    rel = d.relative_to(out)
    return {"id": p["id"], "lang": p["lang"], "corpus": p["corpus"], "dub_text": p["text"],
            "source_lang": p["source_lang"], "source_text": p["source_text"],
            "dub_audio": str(rel / "dub.wav"), "phonemes": str(rel / "phonemes.json"),
            "source_perf": str(rel / "source.perf"), "timemap": str(rel / "timemap.json"),
            "dub_duration_s": round(dub.duration_s, 3), "source_duration_s": round(source.duration_s, 3),
            "dub_bilabials": sum(1 for ph in dub_ph if _bilabial(ph.symbol)),
            "origin": {"dub": str(p["dub"]), "source": str(p["source"])}}


def _bilabial(symbol: str) -> bool:
    from dubtool.metrics import _is_bilabial

    return _is_bilabial(symbol)


def _build(args):
    p, out = args
    try:
        return build_item(p, out), None
    except Exception as e:  # one bad recording must not sink the set; it is listed as skipped
        return None, f"{p['id']}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "build" / "evalset"), help="output folder (default build/evalset)")
    ap.add_argument("--per-lang", type=int, default=40,
                    help="at most this many asterisk prompts per language, evenly spread (0 = all)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dry-run", action="store_true", help="list the items and exit")
    args = ap.parse_args(argv)
    out = Path(args.out)
    plan = plan_items(args.per_lang or None)
    if args.dry_run:
        for p in plan:
            print(f"{p['id']}\t{p['lang']}<-{p['source_lang']}\t{p['text'][:60]}")
        print(f"{len(plan)} items")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    items, skipped = [], []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for k, (item, err) in enumerate(pool.map(_build, [(p, out) for p in plan])):
            if item:
                items.append(item)
            else:
                skipped.append(err)
                print(f"skipped {err}", file=sys.stderr)
            print(f"\r{k + 1}/{len(plan)} items", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if not items:
        print("error: no item could be built", file=sys.stderr)
        return 1
    counts: dict[str, int] = {}
    for it in items:
        counts[it["lang"]] = counts.get(it["lang"], 0) + 1
    manifest = {
        "version": MANIFEST_VERSION, "built_by": "scripts/build_evalset.py", "fps": FPS, "counts": counts,
        "split_rule": "asterisk en/fr/es prompts with sorted index % 5 == 0 per language (training uses the "
                      "rest: same speakers, other prompts); pocketsphinx-testdata librivox + cards (unseen "
                      "speakers)",
        "synthetic_source": "source performances are synthesized (teacher lower face on the source's phonemes + "
                            "procedural upper face); source and dub audio are real recordings",
        "items": items, "skipped": skipped,
    }
    from dubtool.fileio import write_text_atomic

    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(items)} items ({', '.join(f'{k} {v}' for k, v in counts.items())}), {len(skipped)} skipped, "
          f"{time.perf_counter() - t0:.0f} s -> {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`dubtool eval`: score a generated animation against its inputs (dub audio + phonemes, the
time-warped source performance) and, on request, the two baselines built from the same inputs; or run
the model and baselines over the held-out evaluation set and summarise per language.

What is measured (see dubtool/metrics.py and docs/eval.md):
  lip sync      bilabial closure rate on the dub's /p b m/, open-vowel jaw contrast, lip–audio lag
  performance   FDD and upper-face correlation against the warped source (the actor's upper face)
  leak          correlation of the new mouth with the source language's mouth (lower = disentangled)
  smoothness    jitter
The verdict checks the project's claim: the flow model beats the naive copy baseline on lip metrics
and comes within `EvalConfig.teacher_margin` of the transcript-driven teacher without a transcript.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import metrics
from .arkit import Animation
from .audio import Audio
from .errors import DependencyError, InputError

# "flow_raw" (set mode): the generator's own 61 channels before localize copies the warped source's upper
# face over them, so FDD / upper-face correlation test whether keypoint conditioning carries the performance.
SYSTEMS = ("generated", "flow_raw", "teacher", "naive_copy")


@dataclass(frozen=True)
class EvalConfig:
    closure_threshold: float = metrics.CLOSURE_THRESHOLD  # normalized lip gap (0 = rest, 1 = jawOpen 0.5): < 1.7 mm
    closure_tolerance_s: float = 0.04  # closure may lead/trail the acoustic /p b m/ by this much
    max_lag_frames: int = 10
    teacher_margin: float = 0.15       # closure rate the model may fall below the teacher and still "match" it
    max_duration_mismatch_s: float = 0.5


@dataclass(frozen=True)
class LineMetrics:
    """Metrics of one animation of one line. NaN where a metric does not apply (no bilabial, no source)."""

    bilabial_closure_rate: float
    bilabials: int
    open_vowel_jaw: float
    other_jaw: float
    jaw_contrast: float
    lip_audio_lag_frames: float
    fdd: float
    upper_face_correlation: float
    disentanglement_leak: float
    jitter: float
    lve_vs_teacher: float = math.nan

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


# Display order and format of metrics in tables; "better" says which way is good.
METRIC_TABLE = (
    ("bilabial_closure_rate", "closure /p b m/", "{:.2f}", "higher"),
    ("jaw_contrast", "jaw open-vowel contrast", "{:.3f}", "higher"),
    ("lip_audio_lag_frames", "lip-audio lag (frames)", "{:+.1f}", "closer to 0"),
    ("lve_vs_teacher", "LVE vs teacher (cm)", "{:.3f}", "lower"),
    ("fdd", "FDD upper face (cm)", "{:.4f}", "lower"),
    ("upper_face_correlation", "upper-face correlation", "{:.2f}", "higher"),
    ("disentanglement_leak", "source-mouth leak", "{:.2f}", "lower"),
    ("jitter", "jitter", "{:.4f}", "lower"),
)


def evaluate_animation(anim: Animation, dub: Audio, phonemes: Sequence, warped_source: Animation | None = None,
                       teacher_anim: Animation | None = None, config: EvalConfig = EvalConfig(),
                       rig=None) -> LineMetrics:
    """All metrics of one animation against the dub and (optionally) the warped source performance."""
    v, fps = anim.values, anim.fps
    checks = metrics.bilabial_closures(v, phonemes, fps, rig, config.closure_threshold, config.closure_tolerance_s)
    closure = float(np.mean([c.closed for c in checks])) if checks else math.nan
    jaw = metrics.open_vowel_jaw(v, phonemes, fps)
    try:
        lag = float(metrics.lip_audio_lag(v, dub.samples, dub.sample_rate, fps, config.max_lag_frames, rig))
    except InputError:  # frozen mouth or silent audio
        lag = math.nan
    fdd = corr = leak = lve = math.nan
    if warped_source is not None:
        fdd = metrics.fdd(v, warped_source.values, fps, rig)
        corr = metrics.upper_face_correlation(v, warped_source.values)
        leak = metrics.disentanglement_leak(v, warped_source.values, rig)
    if teacher_anim is not None and metrics.rig_available(rig):
        lve = metrics.lip_vertex_error(v, teacher_anim.values, rig)
    return LineMetrics(closure, len(checks), jaw.open_vowel_mean, jaw.other_mean, jaw.contrast, lag, fdd, corr,
                       leak, metrics.jitter(v), lve)


@dataclass
class LineReport:
    """Metrics per system for one line, plus what the inputs were."""

    systems: dict[str, LineMetrics]
    inputs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"inputs": self.inputs, "systems": {k: m.to_json() for k, m in self.systems.items()},
                "verdict": verdict({k: asdict(m) for k, m in self.systems.items()}), "notes": self.notes}


def evaluate_line(generated: Animation | None, dub: Audio, phonemes: Sequence, source: Animation | None = None,
                  timemap=None, with_baselines: bool = False, config: EvalConfig = EvalConfig(),
                  rig=None, fps: float = 30.0, extra: dict[str, Animation] | None = None) -> LineReport:
    """Score `generated` (and with `with_baselines` the teacher and naive-copy baselines) on one line.
    `generated=None` scores the baselines only, at `fps`; `extra` adds named animations of the same frames."""
    from . import baselines

    notes: list[str] = []
    if generated is None:
        with_baselines = True
        n = max(1, int(round(dub.duration_s * fps)))
    else:
        fps, n = generated.fps, generated.num_frames
    if generated is not None and abs(generated.duration_s - dub.duration_s) > config.max_duration_mismatch_s:
        raise InputError(f"generated animation lasts {generated.duration_s:.2f} s but the dub {dub.duration_s:.2f} s; "
                         "evaluate the animation made for this dub")
    if not metrics.rig_available(rig):
        notes.append("face rig not found: lip gap and FDD use channel-level proxies, LVE skipped")
    warped = None
    if source is not None:
        if timemap is None:
            notes.append("no time map: source stretched uniformly onto the dub")
        warped = baselines.warp_to_dub(source, n, fps, dub.duration_s, timemap)
    teacher_anim = None
    systems: dict[str, Animation] = {} if generated is None else {"generated": generated}
    for name, a in (extra or {}).items():
        systems[name] = a if a.num_frames == n else a.resampled(fps)
    if with_baselines:
        if warped is None:
            notes.append("no source performance: only the teacher baseline (with a still upper face) is computed")
            teacher_anim = baselines.teacher_without_source(phonemes, n, fps)
        else:
            teacher_anim = baselines.teacher(phonemes, warped)
            systems["naive_copy"] = baselines.naive_copy(source, n, fps, dub.duration_s, timemap)
        systems["teacher"] = teacher_anim
    if not any(metrics._is_bilabial(s) for s, _, _ in metrics._phoneme_spans(phonemes)):
        notes.append("the line has no /p b m/: closure rate not measured")
    results = {name: evaluate_animation(a, dub, phonemes, warped, teacher_anim if name != "teacher" else None,
                                        config, rig)
               for name, a in systems.items()}
    for name, m in results.items():
        if math.isfinite(m.lip_audio_lag_frames) and abs(m.lip_audio_lag_frames) >= config.max_lag_frames:
            notes.append(f"{name}: lip-audio lag at the ±{config.max_lag_frames}-frame search bound "
                         "(mouth and sound do not line up at any small lag)")
    inputs = {"frames": n, "fps": fps, "dub_duration_s": round(dub.duration_s, 3), "phonemes": len(phonemes),
              "source": source is not None, "timemap": timemap is not None, "rig": metrics.rig_available(rig)}
    return LineReport(results, inputs, notes)


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else math.nan


def verdict(systems: dict[str, dict], margin: float = EvalConfig.teacher_margin) -> dict:
    """Does the generated animation beat the naive copy on lip metrics and match the teacher?
    `systems` maps system name -> metric dict (one line or means over a set)."""
    g = systems.get("generated")
    out: dict = {}
    if g is None:
        return out
    gc = g.get("bilabial_closure_rate")
    naive, teach = systems.get("naive_copy"), systems.get("teacher")

    def ok(x):
        return x is not None and math.isfinite(x)

    if naive is not None and ok(gc) and ok(naive.get("bilabial_closure_rate")):
        out["beats_naive_on_closure"] = bool(gc > naive["bilabial_closure_rate"])
    if naive is not None and ok(g.get("disentanglement_leak")) and ok(naive.get("disentanglement_leak")):
        out["less_source_leak_than_naive"] = bool(g["disentanglement_leak"] < naive["disentanglement_leak"])
    if naive is not None and ok(g.get("jaw_contrast")) and ok(naive.get("jaw_contrast")):
        out["beats_naive_on_jaw_contrast"] = bool(g["jaw_contrast"] > naive["jaw_contrast"])
    if teach is not None and ok(gc) and ok(teach.get("bilabial_closure_rate")):
        out["closure_gap_to_teacher"] = round(float(teach["bilabial_closure_rate"] - gc), 4)
        out["matches_teacher_within_margin"] = bool(gc >= teach["bilabial_closure_rate"] - margin)
        out["teacher_margin"] = margin
    return out


def paired_gain_ci(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict | None:
    """Mean of a - b over the pairs where both are finite, with a 95 % bootstrap interval (lines resampled,
    fixed seed). None for fewer than 3 pairs. `significant` = the interval excludes 0 on the positive side."""
    d = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None
                  and math.isfinite(x) and math.isfinite(y)], dtype=np.float64)
    if len(d) < 3:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(d.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "lines": int(len(d)), "significant": bool(lo > 0)}


def set_gains_over_naive(items: Sequence[dict], lang: str) -> dict:
    """Per-line paired gains of `generated` over `naive_copy` (closure, jaw contrast) for one language or "all"."""
    rows = [it["systems"] for it in items if (lang == "all" or it.get("lang") == lang)
            and "generated" in it.get("systems", {}) and "naive_copy" in it["systems"]]
    out = {}
    for key, name in (("bilabial_closure_rate", "closure_gain_over_naive"), ("jaw_contrast", "jaw_gain_over_naive")):
        ci = paired_gain_ci([r["generated"].get(key) for r in rows], [r["naive_copy"].get(key) for r in rows])
        if ci is not None:
            out[name] = ci
    return out


# ------------------------------------------------------------------------------------- inputs

def load_phonemes_json(path: str | os.PathLike) -> list:
    """Phoneme alignment JSON: a list of {"symbol", "start_s", "end_s"} objects or [symbol, start_s, end_s]
    triples, optionally under a "phonemes" key."""
    from .fileio import require_file
    from .phonemes import Phoneme

    p = require_file(path, "phoneme file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: not a JSON phoneme list ({e})") from None
    if isinstance(data, dict):
        data = data.get("phonemes")
    if not isinstance(data, list) or not data:
        raise InputError(f"{p}: expected a non-empty list of phonemes [{{symbol, start_s, end_s}}, ...]")
    out = []
    for i, item in enumerate(data):
        try:
            if isinstance(item, dict):
                sym, a, b = item["symbol"], item["start_s"], item["end_s"]
            else:
                sym, a, b = item
            ph = Phoneme(str(sym), float(a), float(b))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{p}: phoneme {i}: expected {{symbol, start_s, end_s}}, got {item!r}") from None
        if not (math.isfinite(ph.start_s) and math.isfinite(ph.end_s)) or ph.end_s < ph.start_s or ph.start_s < 0:
            raise InputError(f"{p}: phoneme {i} ({ph.symbol!r}): bad times {ph.start_s}..{ph.end_s}")
        out.append(ph)
    return out


def save_phonemes_json(phonemes, path: str | os.PathLike) -> Path:
    from .fileio import write_text_atomic

    rows = [{"symbol": s, "start_s": round(a, 4), "end_s": round(b, 4)} for s, a, b in metrics._phoneme_spans(phonemes)]
    write_text_atomic(path, json.dumps({"phonemes": rows}, ensure_ascii=False, indent=0) + "\n")
    return Path(path)


def phonemes_from_text(dub: Audio, text: str, lang: str) -> list:
    """The dub's phoneme timing from its transcript (dubtool.phonealign)."""
    if not text or not text.strip():
        raise InputError("--dub-text is empty; give the dub's transcript or --phonemes")
    try:
        from .phonealign import align_phonemes
    except ImportError as e:
        raise DependencyError(f"aligning the transcript needs dubtool.phonealign ({e}); pass --phonemes instead") from None
    return list(align_phonemes(dub, text, lang))


def load_source_animation(path: str | os.PathLike) -> Animation:
    """The source performance: a .perf file (dubtool extract) or a Live Link Face CSV."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        from .livelink import read_csv

        return read_csv(p)
    from .performance import load_performance

    return load_performance(p).animation


def load_timemap_file(path: str | os.PathLike):
    from .timemap import load_timemap

    return load_timemap(path)


# ---------------------------------------------------------------------------------- the eval set

@dataclass
class SetReport:
    """Per-item line reports and per-language means per system."""

    items: list[dict]
    summary: dict[str, dict[str, dict]]  # lang -> system -> metric -> mean
    model: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        def clean(d):
            return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

        summary = {lang: {s: clean(m) for s, m in systems.items()} for lang, systems in self.summary.items()}
        return {"model": self.model, "summary": summary,
                "verdict": {lang: {**verdict(systems), **set_gains_over_naive(self.items, lang)}
                            for lang, systems in self.summary.items()},
                "items": self.items, "notes": self.notes}


def raw_generation(generator, dub: Audio, source_perf, warped_source: Animation, seed: int = 0) -> Animation:
    """The generator's own output for one line (all 61 channels, nothing copied from the source)."""
    from .generate import style_context
    from .keypoints import keypoints_from_curves

    kp = keypoints_from_curves(warped_source.values)
    return generator.generate(dub, kp, style_context(source_perf.animation.values), seed=seed)


def generate_for_line(generator, dub: Audio, source_perf, warped_source: Animation, timemap=None,
                      lang: str = "fr", source_lang: str = "en", seed: int = 0) -> Animation:
    """Localize one line with the flow model and no transcript, as `dubtool localize` does: through
    `dubtool.localize.localize` when it is installed; otherwise the same composition directly (model
    lower face from dub audio + upper-face keypoints of the warped source + its style; upper face, head
    and eyes copied from the warped source)."""
    try:
        from .localize import LocalizeOptions, localize
    except ImportError:
        localize = None
    if localize is not None and timemap is not None:
        opts = LocalizeOptions(lang=lang, source_lang=source_lang, model="flow", seed=seed)
        anim = localize(source_perf, dub, opts, generator=generator, timemap=timemap).animation
        return anim if anim.num_frames == warped_source.num_frames else anim.resampled(warped_source.fps)
    lower = raw_generation(generator, dub, source_perf, warped_source, seed).values
    n = warped_source.num_frames
    lower = lower[:n] if len(lower) >= n else np.concatenate([lower, np.repeat(lower[-1:], n - len(lower), 0)])
    v = lower.copy()
    v[:, metrics.PERFORMANCE_IDX] = warped_source.values[:, metrics.PERFORMANCE_IDX]
    return Animation(v, warped_source.fps, meta={"generator": "flow"}).clamped()


def load_manifest(path: str | os.PathLike) -> tuple[Path, list[dict]]:
    from .fileio import require_file

    p = require_file(path, "evaluation set manifest")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        items = data["items"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{p}: not an evaluation set manifest ({e}); rebuild it with scripts/build_evalset.py") from None
    if not isinstance(items, list) or not items:
        raise InputError(f"{p}: the manifest lists no items")
    for i, it in enumerate(items):
        missing = [k for k in ("id", "lang", "dub_audio", "phonemes", "source_perf") if k not in it]
        if missing:
            raise InputError(f"{p}: item {i}: missing {', '.join(missing)}")
    return p.parent, items


def evaluate_set(manifest_path: str | os.PathLike, model_path: str | None = None, config: EvalConfig = EvalConfig(),
                 langs: Sequence[str] | None = None, limit: int | None = None, baselines_only: bool = False,
                 progress: Callable[[int, int, str], None] | None = None) -> SetReport:
    """Run the model and both baselines over every item of the evaluation set."""
    from .audio import load_audio
    from .baselines import warp_to_dub
    from .generate import load_model
    from .performance import load_performance

    root, items = load_manifest(manifest_path)
    if langs:
        items = [it for it in items if it["lang"] in set(langs)]
    if limit:
        per: dict[str, int] = {}
        kept = []
        for it in items:
            if per.get(it["lang"], 0) < limit:
                per[it["lang"]] = per.get(it["lang"], 0) + 1
                kept.append(it)
        items = kept
    if not items:
        raise InputError(f"{manifest_path}: no items for languages {', '.join(langs or [])}")
    generator = None if baselines_only else load_model(model_path)
    fps = generator.fps if generator is not None else 30.0
    rows: list[dict] = []
    per_lang: dict[str, list[LineReport]] = {}
    for k, it in enumerate(items):
        if progress:
            progress(k, len(items), it["id"])
        dub = load_audio(root / it["dub_audio"])
        phonemes = load_phonemes_json(root / it["phonemes"])
        perf = load_performance(root / it["source_perf"])
        source = perf.animation
        timemap = load_timemap_file(root / it["timemap"]) if it.get("timemap") else None
        anim, extra = None, {}
        if generator is not None:
            n = int(round(dub.duration_s * fps))
            warped = warp_to_dub(source, n, fps, dub.duration_s, timemap)
            anim = generate_for_line(generator, dub, perf, warped, timemap, it["lang"], it.get("source_lang", "en"))
            extra["flow_raw"] = raw_generation(generator, dub, perf, warped)
        rep = evaluate_line(anim, dub, phonemes, source, timemap, True, config, fps=fps, extra=extra)
        per_lang.setdefault(it["lang"], []).append(rep)
        rows.append({"id": it["id"], "lang": it["lang"], **rep.to_json()})
    if progress:
        progress(len(items), len(items), "")
    summary: dict[str, dict[str, dict]] = {}
    groups = dict(per_lang)
    groups["all"] = [r for reps in per_lang.values() for r in reps]
    for lang, reps in groups.items():
        summary[lang] = {}
        for system in SYSTEMS:
            ms = [asdict(r.systems[system]) for r in reps if system in r.systems]
            if ms:
                summary[lang][system] = {key: _mean([m[key] for m in ms]) for key in ms[0] if key != "bilabials"}
                summary[lang][system]["items"] = len(ms)
    return SetReport(rows, summary, "none (baselines only)" if baselines_only else str(model_path or "default"),
                     [] if metrics.rig_available() else ["face rig not found: proxy lip gap"])

"""A studio's own real takes as fine-tuning material (`dubtool train --captures DIR`).

Pairs are found in DIR (and its sub-folders, as the Live Link Face app files takes) by file stem:
  * Live Link Face CSV + the take's `.mov` (its audio read through ffmpeg) or any audio file
    (`<Slate>_<Take>_<Subject>.csv` beside `<Slate>_<Take>_<Subject>.mov`);
  * a `.perf` (`dubtool extract` output) with the audio stored in it, or a same-stem audio file;
  * a video with its own audio track and no CSV beside it: tracked here by `dubtool extract`.
Every pair is checked before any training (`validate_capture`) and a rejected one is one line.

Each take becomes one clip laid out like the training corpus (corpus.Corpus): gain-normalised mel
features of its audio, the take's 61 curves at the model's frame rate as the target, keypoints posed
from the take's own upper face (`keypoints_from_curves`), the style of the whole take
(`style_context`). A share of the takes (by a hash of the name, so the same folder always splits the
same way) is held out and scored with `reference.score` (the `dubtool eval --reference` figures)
for the base model and the fine-tuned one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .arkit import LOWER_IDX, NUM_BLENDSHAPES, Animation, index
from .audio import Audio
from .errors import DubtoolError, InputError

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".mp3", ".m4a", ".ogg", ".opus")
VIDEO_SUFFIXES = (".mov", ".mp4", ".m4v", ".mkv", ".avi", ".webm", ".mxf")
CURVE_SUFFIXES = (".csv", ".perf")
CARD_CHANNELS = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLowerDownLeft", "mouthUpperUpLeft",
                 "mouthPressLeft", "mouthRollLower", "mouthSmileLeft", "mouthStretchLeft")


@dataclass(frozen=True)
class CaptureLimits:
    """What a pair must satisfy to be trained on."""

    max_duration_mismatch_s: float = 0.5  # curves vs audio (reference.MAX_DURATION_MISMATCH_S)
    min_duration_s: float = 1.0
    min_fps: float = 15.0
    max_fps: float = 240.0
    min_face_share: float = 0.8  # frames with a tracked face
    min_speech_dbfs: float = -50.0  # audio.require_speech's loudest-level floor
    min_mouth_std: float = 0.005  # jawOpen/mouth channels must move (a take of a still face teaches nothing)


@dataclass(frozen=True)
class Pair:
    """The files of one take: `curves` (.csv / .perf / video) and `audio` (None: the curves file's own)."""

    name: str
    kind: str  # "livelink" | "perf" | "video"
    curves: Path
    audio: Path | None = None


@dataclass
class Capture:
    """A validated take: its 61 curves, its audio and (tracked from video) the tracked inner-lip gap."""

    pair: Pair
    animation: Animation
    audio: Audio
    lip_gap: np.ndarray | None = None
    face_share: float | None = None  # share of frames with a tracked face (.perf / video)

    @property
    def name(self) -> str:
        return self.pair.name

    def reference(self):
        from .reference import Reference

        return Reference(self.animation, self.lip_gap, "perf" if self.lip_gap is not None else "livelink")


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: str

    def line(self) -> str:
        return f"rejected {self.name}: {self.reason}"


# ---------------------------------------------------------------------------------------- pairing

def find_pairs(folder: str | os.PathLike) -> tuple[list[Pair], list[Rejected]]:
    """Pairs by stem under `folder` (recursively), and one Rejected per stem that has curves but no
    audio or audio but no curves. Other files (thumbnails, JSON) are ignored."""
    root = Path(folder)
    groups: dict[str, dict[str, Path]] = {}
    for p in sorted(root.rglob("*")):
        suffix = p.suffix.lower()
        if not p.is_file() or p.name.startswith(".") or suffix not in CURVE_SUFFIXES + AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            continue
        name = p.relative_to(root).with_suffix("").as_posix()
        groups.setdefault(name, {}).setdefault(suffix, p)
    pairs, rejected = [], []
    for name, files in groups.items():
        audio = next((files[s] for s in AUDIO_SUFFIXES if s in files), None)
        video = next((files[s] for s in VIDEO_SUFFIXES if s in files), None)
        if ".csv" in files:
            if audio is None and video is None:
                rejected.append(Rejected(name, f"{files['.csv'].name} has no audio beside it (expected {Path(name).name}.mov "
                                               f"or {Path(name).name}.wav)"))
            else:
                pairs.append(Pair(name, "livelink", files[".csv"], video or audio))
        elif ".perf" in files:
            pairs.append(Pair(name, "perf", files[".perf"], audio or video))
        elif video is not None:
            pairs.append(Pair(name, "video", video, audio))
        else:
            rejected.append(Rejected(name, f"{audio.name} has no curves beside it (expected {Path(name).name}.csv, "
                                           f"{Path(name).name}.perf or a video)"))
    return pairs, rejected


def load_capture(pair: Pair) -> Capture:
    """Read a pair's curves and audio (a video is tracked by `dubtool extract`); InputError (or another
    DubtoolError) says what is wrong with it."""
    from .audio import load_audio

    lip_gap, share = None, None
    if pair.kind == "livelink":
        import warnings

        from .livelink import read_csv

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NaN cells are interpolated; extra columns ignored
            anim = read_csv(pair.curves)
        audio = load_audio(pair.audio, what="capture audio")
    else:
        from .reference import tracked_lip_gap

        if pair.kind == "perf":
            from .performance import load_performance

            perf = load_performance(pair.curves)
        else:
            from .extract import extract

            perf = extract(pair.curves)
        share = float(np.mean(perf.face_found)) if perf.num_frames else 0.0
        anim = perf.animation
        lip_gap = tracked_lip_gap(perf.landmarks_canonical)
        if pair.audio is not None:
            audio = load_audio(pair.audio, what="capture audio")
        elif perf.audio is not None:
            audio = perf.audio
        else:
            raise InputError(f"{pair.curves.name} has no audio track and no audio file beside it")
    return Capture(pair, anim, audio, lip_gap, share)


def validate_capture(cap: Capture, limits: CaptureLimits = CaptureLimits()) -> None:
    """InputError with the first reason the take cannot be trained on: durations that disagree, an
    odd frame rate, too short, silent audio, no face tracked, or a mouth that does not move."""
    from .audio import require_speech

    anim, audio = cap.animation, cap.audio
    if not (limits.min_fps <= anim.fps <= limits.max_fps):
        raise InputError(f"curves at {anim.fps:g} fps (expected {limits.min_fps:g}..{limits.max_fps:g})")
    gap = anim.duration_s - audio.duration_s
    if abs(gap) > limits.max_duration_mismatch_s:
        raise InputError(f"curves last {anim.duration_s:.2f} s but the audio {audio.duration_s:.2f} s "
                         f"(they must agree within {limits.max_duration_mismatch_s:g} s)")
    if min(anim.duration_s, audio.duration_s) < limits.min_duration_s:
        raise InputError(f"take lasts {min(anim.duration_s, audio.duration_s):.2f} s (at least {limits.min_duration_s:g} s)")
    require_speech(audio, cap.pair.curves.name if cap.pair.audio is None else cap.pair.audio.name,
                   limits.min_speech_dbfs)
    if cap.face_share is not None and cap.face_share < limits.min_face_share:
        raise InputError(f"a face was tracked in {cap.face_share:.0%} of the frames (needs {limits.min_face_share:.0%})")
    blend = anim.values[:, :NUM_BLENDSHAPES]
    tracked = float(np.mean(blend.max(axis=1) > 1e-4))  # the app writes all-zero frames while the face is lost
    if tracked < limits.min_face_share:
        raise InputError(f"a face was tracked in {tracked:.0%} of the frames (all blendshapes 0 elsewhere; needs "
                         f"{limits.min_face_share:.0%})")
    mouth = max(float(anim.values[:, index(n)].std()) for n in ("jawOpen", "mouthClose", "mouthLowerDownLeft",
                                                                 "mouthUpperUpLeft", "mouthFunnel"))
    if mouth < limits.min_mouth_std:
        raise InputError(f"the mouth channels do not move (largest std {mouth:.4f}; jawOpen etc. missing or flat?)")


def collect(folder, limits: CaptureLimits = CaptureLimits(), log=print) -> tuple[list[Capture], list[Rejected]]:
    """Every valid take in `folder`, sorted by name, and one Rejected per pair that is not (each logged
    as one line as it is found)."""
    pairs, rejected = find_pairs(folder)
    for r in rejected:
        log(r.line())
    good = []
    for pair in pairs:
        try:
            cap = load_capture(pair)
            validate_capture(cap, limits)
        except DubtoolError as e:
            r = Rejected(pair.name, _short(str(e), pair))
            rejected.append(r)
            log(r.line())
            continue
        good.append(cap)
    return sorted(good, key=lambda c: c.name), sorted(rejected, key=lambda r: r.name)


def _short(message: str, pair: Pair) -> str:
    """An error message without the full path of the pair's files (the line names the take already)."""
    for p in (pair.curves, pair.audio):
        if p is not None:
            message = message.replace(f"{p}: ", "").replace(str(p), p.name)
    return message


def split_holdout(names: list[str], share: float) -> tuple[list[str], list[str]]:
    """(train, held out): round(share x n) takes, at least 1 (while one is left to train on), picked
    by a hash of the name, so the same folder always splits the same way whatever else is in it."""
    if not 0 <= share < 1:
        raise InputError(f"--holdout must be at least 0 and below 1, got {share}")
    if share == 0 or len(names) < 2:
        return sorted(names), []
    k = min(len(names) - 1, max(1, int(round(share * len(names)))))
    order = sorted(names, key=lambda n: hashlib.sha1(n.encode("utf-8")).hexdigest())
    held = set(order[:k])
    return sorted(n for n in names if n not in held), sorted(held)


# --------------------------------------------------------------------------------------- features

def capture_features(cap: Capture, dims, gain: float = 1.0) -> dict:
    """One corpus clip (corpus.make_clip's layout) from a take, at the model's frame rate: mel of the
    audio, target = the take's 61 curves (its lower-face blendshapes times `gain`, see `amplitude_gains`),
    keypoints from its upper face, style of the whole take. The real lower face carries its emotion
    itself, so the lower-face offset is zero; no viseme labels."""
    from .generate import _fit_length, audio_input, style_context
    from .keypoints import keypoints_from_curves

    fps = float(dims.fps)
    n = int(round(cap.audio.duration_s * fps))
    mel = audio_input(cap.audio.samples, cap.audio.sample_rate, fps, dims.audio_features, dims.n_mels,
                      dims.audio_subframes)
    mel = _fit_length(mel, n, "audio features", tolerance=n)
    values = cap.animation.resampled(fps).clamped().values.astype(np.float32)
    values = _fit_length(values, n, f"{cap.name}: curves", tolerance=n)
    kp = keypoints_from_curves(values)
    if gain != 1.0:
        lower = LOWER_IDX[LOWER_IDX < NUM_BLENDSHAPES]
        values[:, lower] = np.clip(values[:, lower] * gain, 0.0, 1.0)
    return {"mel": mel.astype(np.float32), "target": values, "offset": np.zeros((n, len(LOWER_IDX)), np.float32),
            "keypoints": kp, "viseme": np.zeros(n, np.uint8), "style": style_context(values)}


AMPLITUDES = ("tracked", "takes", "shipped")
MAX_GAIN = 4.0  # amplitude gains are kept within [1/MAX_GAIN, MAX_GAIN]


def amplitude_gains(captures: list[Capture], mode: str, gen=None) -> list[float]:
    """A gain per take for its lower-face blendshapes (blendshapes are 0 at rest, so the rig's lip gap
    opens by gain x the take's; the timing is untouched): "tracked" 1 (the takes as captured);
    "takes" every take's lip-gap std brought to the median over the takes (one actor's range, takes
    that moved little or a lot evened out); "shipped" each take's brought to the lip-gap std of the
    base model `gen` on the take's own audio (the base's range, only the timing and shapes learnt)."""
    from .metrics import lip_gap

    if mode not in AMPLITUDES:
        raise InputError(f"amplitude must be one of {', '.join(AMPLITUDES)}, got {mode!r}")
    if mode == "tracked" or not captures:
        return [1.0] * len(captures)
    spread = np.array([float(lip_gap(c.animation.values).std()) for c in captures])
    if mode == "takes":
        goal = np.full(len(captures), float(np.median(spread)))
    else:
        if gen is None:
            raise InputError("amplitude 'shipped' needs the base model")
        goal = []
        for c in captures:
            f = capture_features(c, gen.dims)
            goal.append(float(lip_gap(gen.generate(c.audio, f["keypoints"], f["style"], seed=0).values).std()))
        goal = np.array(goal)
    gains = np.where(spread > 1e-6, goal / np.maximum(spread, 1e-6), 1.0)
    return [float(g) for g in np.clip(gains, 1.0 / MAX_GAIN, MAX_GAIN)]


def capture_corpus(captures: list[Capture], dims, split: str = "train", gains: list[float] | None = None):
    """The takes as a corpus.Corpus (all in `split`), what train._Batcher samples windows from;
    `gains` (one per take, `amplitude_gains`) scale their lower-face targets."""
    from .corpus import SPLITS, Corpus

    gains = gains if gains is not None else [1.0] * len(captures)
    feats = [capture_features(c, dims, g) for c, g in zip(captures, gains)]
    lengths = np.array([len(f["mel"]) for f in feats], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    cat = lambda k: np.concatenate([f[k] for f in feats])
    clips = [{"id": c.name, "source": c.pair.kind, "split": split} for c in captures]
    return Corpus(cat("mel"), cat("target"), cat("offset"), cat("keypoints"), cat("viseme"),
                  np.stack([f["style"] for f in feats]).astype(np.float32), starts, lengths,
                  np.full(len(feats), SPLITS.index(split), np.int8), clips, {"fps": float(dims.fps)})


def replay_matches(corpus, cfg) -> bool:
    """Whether a built corpus is the replay of corpus config `cfg` (its recorded config, as JSON)."""
    norm = lambda d: json.dumps(d, sort_keys=True)
    return norm(corpus.meta.get("config")) == norm(asdict(cfg))


REPLAY_CLIPS = 96  # espeak clips of the replay corpus: ~14 min of speech, every training language 4+ times


def replay_corpus_config(gen, clips: int | None = None):
    """The CorpusConfig of `gen`'s replay corpus (corpus.replay_config of the corpus config its checkpoint
    records), or None when it records none or that corpus's features do not fit the model."""
    from .corpus import replay_config

    base_cfg = gen.meta.get("config", {}).get("corpus")
    if not isinstance(base_cfg, dict):
        return None
    cfg = replay_config(base_cfg, REPLAY_CLIPS if clips is None else clips)
    d = gen.dims
    fits = (cfg.audio_subframes, cfg.audio_features, cfg.n_mels) == (d.audio_subframes, d.audio_features, d.n_mels)
    return cfg if fits else None


def replay_corpus(gen, clips: int | None = None, cache=None, log=print):
    """(folder, corpus) of the default base mix (a pip install has no built corpus, and the mix was
    validated on this one, docs/captures.md): the first `clips` espeak training clips of the base model's
    own corpus config (`replay_corpus_config`), rebuilt here with the teacher (6 s for 96 clips on 2 quiet
    cores) and cached under the dubtool cache keyed by that config, so later fine-tunes of the same base
    reuse it. (None, None) when there is no such config or the build fails (a warning says why)."""
    from .assets import cache_dir
    from .corpus import CORPUS_VERSION, build_corpus, load_corpus

    cfg = replay_corpus_config(gen, clips)
    if cfg is None:
        return None, None
    key = hashlib.sha256(json.dumps([CORPUS_VERSION, asdict(cfg)], sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache) if cache is not None else cache_dir() / f"replay-{key}"
    try:
        cached = load_corpus(folder)
        if replay_matches(cached, cfg):
            return folder, cached
    except InputError:
        pass
    log(f"replay corpus: building {cfg.espeak_clips} espeak clips of the base model's corpus (teacher curves) -> {folder}")
    try:
        return folder, build_corpus(cfg, folder, progress=False, log=log)
    except (DubtoolError, OSError) as e:  # no espeak voice, a read-only cache: fine-tune on L2-SP alone
        log(f"warning: replay corpus not built ({e}); the fine-tune relies on L2-SP alone")
        return None, None


# ------------------------------------------------------------------------------------- evaluation

def score_takes(gen, captures: list[Capture], seed: int = 0) -> list[dict]:
    """`reference.score` of `gen`'s animation of each take's own audio (keypoints and style from the
    take's own curves, as localize does with an identity time map) against the take."""
    from .reference import score

    rows = []
    for cap in captures:
        f = capture_features(cap, gen.dims)
        anim = gen.generate(cap.audio, f["keypoints"], f["style"], seed=seed)
        s = score(anim, cap.reference(), cap.audio.samples, cap.audio.sample_rate)
        rows.append({"take": cap.name, **s.to_json()})
    return rows


def _median(xs) -> float | None:
    xs = [float(x) for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return round(float(np.median(xs)), 4) if xs else None


def heldout_verdict(scores: dict) -> str:
    """'better' / 'not better' than the base on the held-out takes, in words with the figures: better
    when the median mouth-opening r (lag 0) rises and at least half of the takes improve."""
    b, t = scores["base"]["mouth_r"], scores["fine_tuned"]["mouth_r"]
    def ok(x) -> bool:
        return x is not None and math.isfinite(x)

    pairs = [(r["base_mouth_r"], r["fine_tuned_mouth_r"]) for r in scores["per_take"]
             if ok(r["base_mouth_r"]) and ok(r["fine_tuned_mouth_r"])]
    up = sum(ft > bs for bs, ft in pairs)
    figures = f"median mouth-opening r {_fmt(b)} -> {_fmt(t)}, {up} of {len(pairs)} takes better"
    if not (ok(b) and ok(t) and pairs):
        return f"not scored ({figures})"
    return ("better" if t > b and 2 * up >= len(pairs) else "not better") + f" than the base ({figures})"


def summarize_scores(rows: list[dict], channels=CARD_CHANNELS) -> dict:
    """Medians over takes: mouth-opening r (lag 0 and best lag), jawOpen r, the loudness-envelope
    baseline, and per channel r and amplitude (p95 and std ratio, generated / real)."""
    out = {"takes": len(rows)}
    for k in ("mouth_r", "mouth_r_best", "jaw_r", "envelope_r"):
        out[k] = _median(r.get(k) for r in rows)
    for k in ("channel_r", "amplitude_ratio", "std_ratio"):
        out[k] = {c: _median(r.get(k, {}).get(c) for r in rows) for c in channels}
    return out


# ------------------------------------------------------------------------------------------ job

@dataclass
class CaptureRun:
    """What a `train --captures` run did: the files, the split, the fine-tune and the held-out figures."""

    out: Path
    base: Path
    captures_dir: Path
    used: list[dict] = field(default_factory=list)
    heldout: list[dict] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    regulariser: str = ""
    fine_tune: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)  # {"base": summary, "fine_tuned": summary, "per_take": ...}
    card: Path | None = None

    def to_json(self) -> dict:
        return {"out": str(self.out), "card": str(self.card) if self.card else None, "base": str(self.base),
                "captures": str(self.captures_dir), "used": self.used, "heldout": self.heldout,
                "rejected": [asdict(r) for r in self.rejected], "regulariser": self.regulariser,
                "fine_tune": self.fine_tune, "scores": self.scores}


def _take_row(cap: Capture) -> dict:
    files = [cap.pair.curves.name] + ([cap.pair.audio.name] if cap.pair.audio is not None else [])
    return {"take": cap.name, "kind": cap.pair.kind, "files": files, "seconds": round(cap.audio.duration_s, 2),
            "fps": round(cap.animation.fps, 3)}


def train_on_captures(captures_dir, out, base=None, holdout: float = 0.2, steps: int | None = None,
                      time_limit_s: float | None = None, device: str = "cpu", base_corpus="auto",
                      heldout_names: list[str] | None = None, limits: CaptureLimits = CaptureLimits(),
                      cfg=None, progress: bool = True, log=print) -> CaptureRun:
    """The whole job: collect and validate the pairs, split off the held-out takes, fine-tune the base
    checkpoint, score the held-out takes with the base and the fine-tuned model, write the checkpoint
    and its model card (`out` with .md) atomically. `base_corpus`: a corpus folder, "auto"
    (the cached replay corpus, `replay_corpus`) or None (L2-SP to the base weights only). `heldout_names`
    replaces the automatic split (benchmarks split by speaker)."""
    from .generate import DEFAULT_MODEL, load_model, save_checkpoint
    from .train import FinetuneConfig, TrainConfig, fine_tune

    cfg = cfg or FinetuneConfig()
    base = Path(base) if base is not None else DEFAULT_MODEL
    gen = load_model(base, device="cpu")
    captures, rejected = collect(captures_dir, limits, log)
    if not captures:
        raise InputError(f"{captures_dir}: no valid capture pair to fine-tune on ({len(rejected)} rejected; see the lines "
                         "above). A pair is a Live Link Face CSV + its .mov/.wav, a .perf, or a video with audio")
    names = [c.name for c in captures]
    if heldout_names is not None:
        unknown = sorted(set(heldout_names) - set(names))
        if unknown:
            raise InputError(f"held-out take(s) not among the valid pairs: {', '.join(unknown)}")
        held_set = set(heldout_names)
        if len(held_set) >= len(names):
            raise InputError("every take is held out: nothing left to fine-tune on")
    else:
        held_set = set(split_holdout(names, holdout)[1])
    train_caps = [c for c in captures if c.name not in held_set]
    held_caps = [c for c in captures if c.name in held_set]
    if not held_caps:
        log("warning: only one valid take (or --holdout 0): nothing held out, no held-out figures")
    log(f"captures: {len(captures)} valid ({sum(c.audio.duration_s for c in train_caps):.1f} s to fine-tune on, "
        f"{len(held_caps)} held out), {len(rejected)} rejected")
    gains = amplitude_gains(train_caps, cfg.amplitude, gen)
    corpus = capture_corpus(train_caps, gen.dims, gains=gains)
    held_corpus = capture_corpus(held_caps, gen.dims) if held_caps else None
    base_dir, base_c = (None, None)
    no_mix = "--base-corpus none"
    if base_corpus == "auto" and cfg.base_share <= 0:
        no_mix = "base_share 0"
    elif base_corpus == "auto":
        base_dir, base_c = replay_corpus(gen, log=log)
        no_mix = ("the replay corpus could not be built (see the warning above)" if replay_corpus_config(gen)
                  else "the checkpoint records no corpus config to replay")
    elif base_corpus is not None:
        from .corpus import check_fits, load_corpus

        base_dir, base_c = Path(base_corpus), load_corpus(base_corpus)
        check_fits(base_c, gen.dims, base_corpus)
    if base_c is None:
        mix = f"; no base corpus ({no_mix}), so no corpus mix"
    elif cfg.base_share > 0:
        mix = f" + {100 * cfg.base_share:g}% of every batch from the base corpus {base_dir}"
    else:
        mix = f"; base corpus {base_dir} only measured (base_share 0), not mixed"
    regulariser = f"L2-SP to the base weights (l2_base {cfg.l2_base:g})" + mix
    log(f"regularisation: {regulariser}")
    meta_cfg = gen.meta.get("config", {}).get("train", {})
    try:
        train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta_cfg.items()})
    except TypeError:
        train_cfg = TrainConfig()
    tuned, report = fine_tune(gen, corpus, cfg, base_corpus=base_c, train_cfg=train_cfg, heldout=held_corpus,
                              steps=steps, time_limit_s=time_limit_s, device=device, progress=progress, log=log)
    scores = {}
    if held_caps:
        tuned_cpu = tuned if device == "cpu" else _to_cpu(tuned)
        per_base, per_tuned = score_takes(gen, held_caps), score_takes(tuned_cpu, held_caps)
        scores = {"base": summarize_scores(per_base), "fine_tuned": summarize_scores(per_tuned),
                  "per_take": [{"take": b["take"], "base_mouth_r": b["mouth_r"], "fine_tuned_mouth_r": t["mouth_r"]}
                               for b, t in zip(per_base, per_tuned)]}
        verdict = heldout_verdict(scores)
        scores["verdict"] = verdict
        if not verdict.startswith("better"):
            log(f"warning: the fine-tuned model is {verdict} on the held-out takes; the base model may serve "
                "this actor as well (more takes help; the card has the per-take figures)")
    run = CaptureRun(Path(out), base, Path(captures_dir), [_take_row(c) for c in train_caps],
                     [_take_row(c) for c in held_caps], rejected, regulariser, report, scores)
    base_name = gen.meta.get("name", base.stem)
    meta = {k: v for k, v in gen.meta.items() if k not in ("articulation_gain", "articulation_calibration")}
    meta.update(name=f"{base_name}+{Path(out).stem}", base_model={"path": str(base), "name": base_name},
                fine_tune={"captures": run.used, "heldout": run.heldout, "rejected": len(rejected),
                           "regulariser": regulariser, **report, "heldout_scores": {k: v for k, v in scores.items()
                                                                                   if k != "per_take"}})
    meta.pop("history", None)
    save_checkpoint(out, tuned.net, tuned.dims, tuned.sampler, tuned.stats(), meta)
    from .fileio import write_text_atomic

    run.card = Path(out).with_suffix(".md")
    write_text_atomic(run.card, model_card(run, base_name))
    return run


def _to_cpu(gen):
    from .generate import Generator

    return Generator(gen.net.to("cpu"), gen.dims, gen.sampler, gen.stats(), gen.meta, "cpu")


def _fmt(x, fmt="{:.2f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def model_card(run: CaptureRun, base_name: str) -> str:
    """The fine-tuned checkpoint's card: data, pairs used and rejected, held-out figures base vs fine-tuned."""
    ft = run.fine_tune
    secs = sum(r["seconds"] for r in run.used)
    lines = [f"# {run.out.stem}: {base_name} fine-tuned on {run.captures_dir.name}/", "",
             f"A `dubtool train --captures` fine-tune of `{run.base.name}` ({base_name}); a normal checkpoint: "
             f"`dubtool localize ... --model-path {run.out.name}`.", "",
             "## Data", "",
             f"- captures: `{run.captures_dir}`: {len(run.used)} takes fine-tuned on ({secs:.1f} s), "
             f"{len(run.heldout)} held out, {len(run.rejected)} rejected",
             "- targets: the takes' own 61 curves" + (" (lower-face range scaled, see 'fitted')"
                                                       if ft["config"].get("amplitude", "tracked") != "tracked" else "")
             + ", normalised with the base checkpoint's statistics; keypoints from each take's upper face, style "
             "from the whole take",
             f"- regularisation: {run.regulariser}",
             f"- fine-tune: {ft['steps']} steps of {ft['steps_asked']} ({'stopped by the time limit, ' if ft['stopped_by_time_limit'] else ''}"
             f"{ft['seconds']:.0f} s on {ft['device']}), batch {ft['batch']['capture']} capture + "
             f"{ft['batch']['base_corpus']} base-corpus windows of {ft['window_frames']} frames, lr {ft['config']['lr']:g}, "
             f"weights moved {ft['weight_drift_rms']:.2g} RMS from the base",
             f"- fitted: {_fitted(ft['config'])}", "",
             "| take | kind | files | s | fps | use |", "|---|---|---|---:|---:|---|"]
    for use, rows in (("fine-tune", run.used), ("held out", run.heldout)):
        lines += [f"| {r['take']} | {r['kind']} | {', '.join(r['files'])} | {r['seconds']:.1f} | {r['fps']:g} | {use} |"
                  for r in rows]
    if run.rejected:
        lines += ["", "Rejected pairs:", ""] + [f"- {r.line()}" for r in run.rejected]
    lines += ["", "## Loss (fixed windows, same noise, before → after)", "",
              "| windows | base | fine-tuned |", "|---|---:|---:|"]
    for k, v in ft["probe_loss_before"].items():
        lines.append(f"| {k.replace('_', ' ')} | {v:.4f} | {ft['probe_loss_after'].get(k, float('nan')):.4f} |")
    lines += ["", "## Held-out takes (`dubtool eval --reference` figures, median over takes)", ""]
    if not run.scores:
        lines.append("No take was held out (one valid take, or --holdout 0): no held-out figures.")
    else:
        b, t = run.scores["base"], run.scores["fine_tuned"]
        if run.scores.get("verdict"):
            lines += [f"**Verdict: {run.scores['verdict']}.**", ""]
        lines += [f"{b['takes']} held-out takes: {', '.join(r['take'] for r in run.heldout)}. Mouth opening of the "
                  "real take: tracked inner-lip landmarks (.perf / video) or the rig lip gap of its weights (CSV).", "",
                  "| figure | base | fine-tuned |", "|---|---:|---:|"]
        for key, label in (("mouth_r", "mouth-opening r, lag 0"), ("mouth_r_best", "mouth-opening r, best lag ±3"),
                           ("jaw_r", "jawOpen r"), ("envelope_r", "loudness envelope r (baseline)")):
            lines.append(f"| {label} | {_fmt(b[key])} | {_fmt(t[key])} |")
        lines += ["", "| channel | r base | r fine-tuned | p95 ratio base | p95 ratio fine-tuned | std ratio base | "
                  "std ratio fine-tuned |", "|---|---:|---:|---:|---:|---:|---:|"]
        for c in CARD_CHANNELS:
            cells = [b["channel_r"][c], t["channel_r"][c], b["amplitude_ratio"][c], t["amplitude_ratio"][c],
                     b["std_ratio"][c], t["std_ratio"][c]]
            if all(x is None for x in cells):
                continue
            lines.append(f"| {c} | " + " | ".join(_fmt(x, "{:.2f}" if i < 2 else "{:.2f}x") for i, x in enumerate(cells)) + " |")
        lines += ["", "Amplitude ratios are generated / real during speech (1.00x = the real take's).", "",
                  "| held-out take | mouth-opening r base | fine-tuned |", "|---|---:|---:|"]
        lines += [f"| {r['take']} | {_fmt(r['base_mouth_r'])} | {_fmt(r['fine_tuned_mouth_r'])} |"
                  for r in run.scores["per_take"]]
    lines += ["", "## Base model", "", f"`{run.base}` ({base_name}); its card: `{run.base.with_suffix('.md').name}`.", ""]
    return "\n".join(lines)


def _fitted(c: dict) -> str:
    """The fine-tune's loss set-up in words (FinetuneConfig as a dict)."""
    parts = ["the lower face only (no loss on the upper face and head)" if c.get("upper_weight", 1) == 0 else
             "all 61 channels"]
    if c.get("lip_gap_weight"):
        parts.append(f"+ the rig's inner-lip gap (weight {c['lip_gap_weight']:g})")
    amp = c.get("amplitude", "tracked")
    parts.append({"tracked": "targets at the takes' tracked amplitude",
                  "takes": "every take's mouth range brought to the takes' median",
                  "shipped": "each take's mouth range brought to the base model's on its audio"}.get(amp, amp))
    if c.get("freeze_audio"):
        parts.append("audio front end frozen")
    return ", ".join(parts)


def run_summary_json(run: CaptureRun) -> str:
    return json.dumps(run.to_json(), indent=1)

"""Dialogue localization: the source actor's upper-face performance carried onto a dub line.

    source (.perf or video) --extract--> Performance ------------------+
    dub audio --------------- align --> TimeMap (source <-> dub time)   |
    warp: source curves resampled at timemap.source_time(dub frame times)
    style = style_context(whole source); keypoints = keypoints_from_curves(warped upper face)
    lower face = flow generator(dub audio, keypoints, style)  |  teacher(dub transcript phonemes)
    output = lower face from the generator + brows/eyes/squint, head and eye rotations from the
             warped source (or semantic keyframes, or a blend of both)

`localize` is pure in the sense that it takes loaded inputs and returns an Animation and a report;
`localize_files` is the file-level job the CLI and the batch runner call (atomic outputs, the report
written before the CSV so an existing CSV means a finished line).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .align import AlignConfig, align
from .arkit import EYE_ROT_IDX, HEAD_IDX, NUM_BLENDSHAPES, NUM_CHANNELS, UPPER_IDX, Animation
from .audio import Audio, load_audio, require_speech, sample_span
from .errors import DubtoolError, InputError, ModelError
from .export import check_export_paths
from .fileio import require_distinct_outputs, require_file, require_writable, staged_outputs, write_text_atomic
from .timemap import TimeMap, compact_json, uniform_timemap

REPORT_VERSION = 1
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf"}
# Channels the source performance (or keyframes) drives; everything else comes from the lower-face model.
PERFORMANCE_IDX = np.concatenate([UPPER_IDX, HEAD_IDX, EYE_ROT_IDX])
LONG_DUB_RATIO = 3.0


@dataclass(frozen=True)
class LocalizeOptions:
    """Settings of one localize job. `model` is "flow" (the trained generator) or "teacher" (the
    transcript-driven viseme model; needs `dub_text`). `keyframe_blend` 0..1 weights `keyframes`
    against the warped source on the upper face (1 = keyframes only). `start_s`/`end_s` cut the dub.
    `stretch_blinks` warps blinks like everything else instead of keeping their natural speed.
    `upper` = "source" copies the warped source's upper face, head and eyes into the output
    exactly (the default: the actor's performance, untouched); "model" keeps the flow model's own
    upper face, which it regenerates from the keypoints (smoother, coherent with the style)."""

    lang: str = "fr"
    source_lang: str = "en"
    model: str = "flow"
    model_path: str | None = None
    fps: float | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    device: str = "cpu"
    dub_text: str | None = None
    source_text: str | None = None
    keyframes: str | None = None
    keyframe_blend: float = 1.0
    start_s: float | None = None
    end_s: float | None = None
    stretch_blinks: bool = False
    upper: str = "source"
    timecode: str | None = None  # timecode of the dub's time 0 (HH:MM:SS:FF at the output rate)
    align: AlignConfig = field(default_factory=AlignConfig)

    def validate(self) -> None:
        if self.upper not in ("source", "model"):
            raise InputError(f"--upper must be 'source' or 'model', got {self.upper!r}")
        if self.upper == "model" and self.model != "flow":
            raise InputError("--upper model needs --model flow (the teacher makes no upper face)")
        if self.model not in ("flow", "teacher"):
            raise InputError(f"--model must be 'flow' or 'teacher', got {self.model!r}")
        if self.model == "teacher" and not (self.dub_text and self.dub_text.strip()):
            raise InputError("--model teacher needs the dub transcript (--dub-text)")
        if self.fps is not None and not (0 < self.fps <= 240):
            raise InputError(f"--fps must be in 0..240 (above 0), got {self.fps:g}")
        if self.steps is not None and not (1 <= self.steps <= 1000):
            raise InputError(f"--steps must be in 1..1000, got {self.steps}")
        if not 0.0 <= self.keyframe_blend <= 1.0:
            raise InputError(f"--keyframe-blend must be in 0..1, got {self.keyframe_blend:g}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"--device must be cpu or cuda, got {self.device!r}")
        for flag, value in (("--start", self.start_s), ("--end", self.end_s), ("--guidance", self.guidance),
                            ("--fps", self.fps)):
            if value is not None and not math.isfinite(value):
                raise InputError(f"{flag} must be a finite number, got {value}")
        if self.start_s is not None and self.start_s < 0:
            raise InputError(f"--start must be at least 0 seconds, got {self.start_s:g}")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise InputError(f"--end ({self.end_s}) must be after --start ({self.start_s})")
        if self.timecode is not None:
            from .livelink import start_timecode_s

            start_timecode_s(self.timecode, self.fps or 60.0)  # the format; FF is checked again at the output rate
        # The flow model needs audio only: any --lang is fine. The teacher times the transcript with
        # espeak's pronunciations, so it needs a language espeak-ng speaks.
        if self.model == "teacher":
            from .lang import language

            language(self.lang, "--model teacher")


@dataclass
class LocalizeResult:
    animation: Animation
    timemap: TimeMap
    report: dict


# --- inputs -------------------------------------------------------------------------------------

def voice_for_lang(code: str) -> str:
    """espeak voice for a --lang code; InputError listing the supported codes otherwise."""
    from .lang import voice_for

    return voice_for(code)


def _usable_transcripts(options: LocalizeOptions, warnings_: list[str]) -> tuple[str | None, str | None, str | None, str | None]:
    """(source_text, dub_text, source_voice, dub_voice): a transcript whose language espeak-ng does not
    speak cannot be timed, so it is dropped with a warning (the flow model does not need it)."""
    from .lang import voice_or_none

    source_voice, dub_voice = voice_or_none(options.source_lang), voice_or_none(options.lang)
    source_text, dub_text = options.source_text, options.dub_text
    for flag, code, voice, text in (("--dub-text", options.lang, dub_voice, dub_text),
                                    ("--source-text", options.source_lang, source_voice, source_text)):
        if text and voice is None:
            warnings_.append(f"{flag} not used: unsupported language {code!r} (transcript alignment needs a "
                             "language espeak-ng speaks)")
    return (source_text if source_voice else None, dub_text if dub_voice else None, source_voice, dub_voice)


def load_source(path: str | os.PathLike):
    """A Performance from a .perf file, or by running extract on a video (at the video's frame rate;
    the warp resamples to the output rate). The last few are kept per process, keyed by the file's
    path, size and modification time: a batch whose lines share a source reads (or tracks) it once."""
    p = require_file(path, "source")
    if p.suffix.lower() != ".perf" and p.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"{p}: source must be a .perf file or a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
    st = p.stat()
    return _load_source_file(p, str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_source_file(p: Path, resolved: str, size: int, mtime_ns: int):
    """load_source's work on `p` (named as the user gave it, for messages); the other arguments are
    only the cache key (a changed file is read again). Nothing downstream writes into a
    Performance's arrays, so lines can share one."""
    if p.suffix.lower() == ".perf":
        from .performance import load_performance

        return load_performance(p)
    from .extract import extract

    return extract(p)


def load_source_audio(path: str | os.PathLike) -> Audio:
    """The source's speech: the audio stored in a .perf file, or the audio track of a video/audio file."""
    p = require_file(path, "source")
    if p.suffix.lower() == ".perf":
        from .performance import load_performance

        perf = load_performance(p)
        if perf.audio is None:
            raise InputError(f"{p}: performance has no audio track; align needs the source speech")
        return perf.audio
    return load_audio(p, what="source")


# --- pure steps ---------------------------------------------------------------------------------

def warp_values(values: np.ndarray, fps: float, source_times_s: np.ndarray) -> np.ndarray:
    """Resample frames-at-`fps` arrays (T, ...) at arbitrary source times (linear, clamped at the ends)."""
    v = np.asarray(values)
    t = np.clip(np.asarray(source_times_s, np.float64) * fps, 0.0, len(v) - 1)
    i0 = np.floor(t).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(v) - 1)
    w = (t - i0).reshape((-1,) + (1,) * (v.ndim - 1))
    return ((1.0 - w) * v[i0] + w * v[i1]).astype(v.dtype)


MAX_BLINK_S = 0.5  # longer closures are deliberate (eyes shut) and are warped like everything else


def blink_events(blink: np.ndarray, fps: float, rise: float = 0.25, settle: float = 0.05) -> list[tuple[int, int]]:
    """Frame spans [a, b) of blinks in a 0..1 eyelid curve: peaks more than `rise` above the curve's
    median, extended to where the curve settles back within `settle` of it (or stops falling);
    spans longer than MAX_BLINK_S are left out."""
    b = np.asarray(blink, np.float64)
    if b.size < 3:
        return []
    base = float(np.median(b))
    above = b > base + rise
    out = []
    i, n = 0, len(b)
    while i < n:
        if not above[i]:
            i += 1
            continue
        j = i
        while j < n and above[j]:
            j += 1
        a, e = i, j
        while a > 0 and b[a - 1] > base + settle and b[a - 1] <= b[a]:
            a -= 1
        while e < n and b[e] > base + settle and b[e] <= b[e - 1]:
            e += 1
        if (e - a) / fps <= MAX_BLINK_S:
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], e)
            else:
                out.append((a, e))
        i = max(j, e)
    return out


def warp_preserving_blinks(values: np.ndarray, fps: float, timemap: TimeMap, dub_times_s: np.ndarray,
                           channels=None) -> np.ndarray:
    """`warp_values` at `timemap.source_time(dub_times_s)`, except that blinks keep their natural
    speed: the eyelid channels are split into a blink-free baseline (blinks bridged linearly), which
    is warped, plus each blink event, re-timed to the dub time of its centre at slope 1. A blink in a
    phrase the dub says 2x slower then still lasts ~150 ms instead of a sleepy 300 ms."""
    return BlinkWarp(values, fps, timemap, channels)(dub_times_s)


class BlinkWarp:
    """warp_preserving_blinks with the source's blink events found once: calling it on any dub times
    gives those frames' values, so a long dub is warped window by window (frame by frame the same)."""

    def __init__(self, values: np.ndarray, fps: float, timemap: TimeMap, channels=None) -> None:
        from .arkit import index

        self.ch = [index("eyeBlinkLeft"), index("eyeBlinkRight")] if channels is None else list(channels)
        self.v = v = np.asarray(values, np.float32)
        self.fps, self.timemap = fps, timemap
        lid = v[:, self.ch].mean(axis=1)
        self.events = blink_events(lid, fps)
        if not self.events:
            return
        base = v[:, self.ch].astype(np.float64).copy()
        frames = np.arange(len(v))
        for a, e in self.events:  # bridge each blink on the baseline
            lo, hi = max(a - 1, 0), min(e, len(v) - 1)
            for k in range(len(self.ch)):
                base[a:e, k] = np.interp(frames[a:e], [lo, hi], [base[lo, k], base[hi, k]])
        self.base = base

    def __call__(self, dub_times_s: np.ndarray) -> np.ndarray:
        v, fps, ch = self.v, self.fps, self.ch
        src_t = self.timemap.source_time(dub_times_s)
        out = warp_values(v, fps, src_t)
        if not self.events:
            return out
        base = self.base
        warped_base = warp_values(base, fps, src_t)
        result = warped_base.copy()
        src_times = np.arange(len(v)) / fps
        dub_t = np.asarray(dub_times_s, np.float64)
        for a, e in self.events:
            centre_src = 0.5 * (a + e - 1) / fps
            centre_dub = float(self.timemap.dub_time(centre_src))
            half = 0.5 * (e - a) / fps + 0.5 / fps
            m = np.abs(dub_t - centre_dub) <= half
            if not m.any():
                continue
            s = centre_src + (dub_t[m] - centre_dub)  # slope 1 around the mapped centre
            bump = np.stack([np.interp(s, src_times, v[:, c] - base[:, k]) for k, c in enumerate(ch)], axis=1)
            result[m] = np.maximum(result[m], warped_base[m] + np.clip(bump, 0, None))
        out[:, ch] = np.clip(result, 0, 1)
        return out


def compose(lower_values: np.ndarray, performance_values: np.ndarray) -> np.ndarray:
    """Lower face (jaw, mouth, cheek puff, tongue) from the speech model, upper face + head + eye
    rotations from the (warped) performance."""
    out = np.array(lower_values, np.float32, copy=True)
    out[:, PERFORMANCE_IDX] = performance_values[:, PERFORMANCE_IDX]
    return out


def blend_performance(warped: np.ndarray, keyframed: np.ndarray, weight: float) -> np.ndarray:
    """Upper face, head and eyes: (1 - weight) * warped source + weight * keyframe curves."""
    out = np.array(warped, np.float32, copy=True)
    idx = PERFORMANCE_IDX
    out[:, idx] = (1.0 - weight) * warped[:, idx] + weight * keyframed[:, idx]
    return out


# --- models -------------------------------------------------------------------------------------

_GENERATORS: dict = {}


def get_generator(model_path: str | None = None, device: str = "cpu"):
    """The flow generator, loaded once per process (the batch runner's workers reuse it)."""
    key = (model_path, device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is available to this torch build; use --device cpu")
    if key not in _GENERATORS:
        try:
            from .generate import load_model
        except ImportError:
            raise ModelError("the flow generator (dubtool.generate) is not installed; use --model teacher") from None
        _GENERATORS[key] = load_model(model_path, device=device)
    return _GENERATORS[key]


def _prefetch_generator(options: "LocalizeOptions", generator):
    """Start loading the flow generator in a thread (a one-shot run: nothing cached yet), so that importing
    onnxruntime and building its sessions overlap the dub's ffmpeg decode and the source's loading (a video
    source: its tracking), ~0.2 s of wall. Returns a function that waits for it; a load that failed is
    retried (and reports its error) where the generator is needed, as without the thread."""
    import threading

    if options.model != "flow" or generator is not None or (options.model_path, options.device) in _GENERATORS \
            or options.device.startswith("cuda"):
        return lambda: None

    def load() -> None:
        try:
            get_generator(options.model_path, options.device)
        except Exception:  # noqa: BLE001 - raised again, in the main thread, by localize's own call
            pass

    thread = threading.Thread(target=load, name="dubtool-model-load", daemon=True)
    thread.start()
    return thread.join


def dub_phonemes(dub: Audio, text: str, lang: str) -> list:
    """Phonemes of the dub with times, from its transcript aligned to the recording
    (`phonealign.align_phonemes`; without it, align's espeak-synthesis DTW)."""
    try:
        from .phonealign import align_phonemes
    except ImportError:
        from .align import transcript_phonemes

        return transcript_phonemes(dub, text, voice_for_lang(lang))
    return list(align_phonemes(dub, text, lang))


def _shift_phonemes(phonemes, offset_s: float, duration_s: float) -> list:
    from dataclasses import replace

    out = []
    for p in phonemes:
        a, b = p.start_s - offset_s, p.end_s - offset_s
        if b > 0 and a < duration_s:
            out.append(replace(p, start_s=max(0.0, a), end_s=min(duration_s, b)))
    return out


# --- the job ------------------------------------------------------------------------------------

OUT_BLOCK_FRAMES = 4096  # frames per block where no generator groups set the pace (teacher, keyframes)


def localize(source, dub: Audio, options: LocalizeOptions = LocalizeOptions(), generator=None,
             timemap: TimeMap | None = None, sink=None) -> LocalizeResult:
    """Localize one line: `source` is a Performance, `dub` the dub Audio. Returns the animation at
    the output fps over [start_s, end_s) of the dub, the time map and a JSON-able report.

    The frames are made window by window (the generator's groups; `_LineFrames`). With `sink`, a
    function (fps, frames, timecode_start_s) -> write, called once before the first frames, each block of
    output values (frames, 61) goes to `write` in order and is not kept (the result's animation is then
    None): an hour of dub runs in flat memory."""
    options.validate()
    timings: dict[str, float] = {}
    warnings_: list[str] = []
    t0 = time.perf_counter()
    require_speech(dub, "dub audio")
    source_text, dub_text, source_voice, dub_voice = _usable_transcripts(options, warnings_)

    src_anim: Animation = source.animation
    ratio = dub.duration_s / max(source.duration_s, 1e-6)
    if ratio > LONG_DUB_RATIO:
        warnings_.append(f"dub ({dub.duration_s:.1f} s) is {ratio:.1f}x longer than the source "
                         f"({source.duration_s:.1f} s); the upper-face performance is stretched a lot")

    # 1. time map (the source speech is the .perf's audio track)
    t = time.perf_counter()
    if timemap is None:
        if source.audio is None:
            timemap = uniform_timemap(source.duration_s, dub.duration_s, "source has no audio; uniform stretch")
            warnings_.append("source has no audio track: the performance is stretched uniformly onto the dub")
        else:
            timemap = align(source.audio, _whole(dub) if source_text and dub_text else dub, options.align,
                            source_text, dub_text, source_voice or "en", dub_voice or "en")
    timings["align_s"] = time.perf_counter() - t

    # 2. the dub span to process and its frames
    start = float(options.start_s or 0.0)
    end = float(options.end_s) if options.end_s is not None else dub.duration_s
    if start >= dub.duration_s:
        raise InputError(f"--start {start:.2f} s is past the end of the dub ({dub.duration_s:.2f} s)")
    end = min(end, dub.duration_s)
    sr = dub.sample_rate
    seg = Audio(sample_span(dub.samples, int(round(start * sr)), int(round(end * sr))), sr)
    if options.model == "flow" and generator is None:
        generator = get_generator(options.model_path, options.device)
    model_fps = float(generator.fps) if options.model == "flow" else float(options.fps or src_anim.fps)
    fps = float(options.fps or model_fps)
    n_model = max(1, int(round(seg.duration_s * model_fps)))
    n_out = max(1, int(round(seg.duration_s * fps)))

    # 3. the source performance warped onto the dub timeline (at the model's frame rate), window by window
    t = time.perf_counter()
    kf = None
    if options.keyframes:
        from .keyframes import keyframe_curves, load_keyframes

        track = load_keyframes(options.keyframes)
        kf = keyframe_curves(track, model_fps, dub.duration_s).values
    frames = _LineFrames(source, timemap, model_fps, start, options, kf, timings)
    timings["warp_s"] = time.perf_counter() - t

    # 4. lower face, block by block
    t = time.perf_counter()
    phonemes = None
    if dub_text:
        try:
            phonemes = _shift_phonemes(dub_phonemes(_whole(dub), dub_text, options.lang), start, seg.duration_s)
        except DubtoolError as e:
            if options.model == "teacher":
                raise
            warnings_.append(f"could not time the dub transcript ({e}); transcript metrics skipped")
    if options.model == "flow":
        from .generate import style_context

        style = style_context(src_anim.values)
        timings["keypoints_s"] = 0.0
        lower_blocks = generator.generate_blocks(seg, frames.keypoints, style, steps=options.steps,
                                                 guidance=options.guidance, seed=options.seed)
    else:
        from .teacher import lower_face_from_phonemes

        lower = _fit_frames(lower_face_from_phonemes(phonemes, seg.duration_s, model_fps).values, n_model)
        lower_blocks = ((a, lower[a:a + OUT_BLOCK_FRAMES]) for a in range(0, n_model, OUT_BLOCK_FRAMES))

    # Time of day of the output's first frame: the dub's start timecode (--timecode, else the source
    # take's, since a dub is conformed to the source picture) plus the processed span's offset.
    if options.timecode is not None:
        from .livelink import start_timecode_s

        tc_base = start_timecode_s(options.timecode, fps)
    else:
        tc_base = source.animation.timecode_start_s or 0.0
    tc_start = tc_base + start
    meta = {"source": source.meta.get("source"), "lang": options.lang, "model": options.model}
    kept: list[np.ndarray] = []
    on_frames = kept.append if sink is None else sink(fps, n_out, tc_start)
    metrics_acc = _LineMetrics(src_anim, timemap, start, fps, phonemes is not None)
    out = _OutputFrames(model_fps, fps, n_model, n_out)
    t_metrics = 0.0
    for block in _model_blocks(lower_blocks, n_model):
        warped, performance = frames.frames(block[0], block[0] + len(block[1]))
        values = block[1] if options.upper == "model" else compose(block[1], performance)
        for j0, ob in out.push(block[0], values):
            tm = time.perf_counter()
            metrics_acc.add(j0, ob)
            t_metrics += time.perf_counter() - tm
            on_frames(ob)
    for j0, ob in out.finish():
        tm = time.perf_counter()
        metrics_acc.add(j0, ob)
        t_metrics += time.perf_counter() - tm
        on_frames(ob)
    timings["generate_s"] = time.perf_counter() - t - t_metrics
    anim = None
    if sink is None:
        anim = Animation(kept[0] if len(kept) == 1 else np.concatenate(kept), fps, tc_start, meta)
    del kept

    # 5. metrics
    t = time.perf_counter()
    metrics = metrics_acc.result(seg, phonemes)
    timings["metrics_s"] = time.perf_counter() - t + t_metrics
    timings["total_s"] = time.perf_counter() - t0

    report = {
        "version": REPORT_VERSION,
        "lang": options.lang,
        "model": options.model,
        "source_duration_s": round(source.duration_s, 4),
        "dub_duration_s": round(dub.duration_s, 4),
        "span_s": [round(start, 4), round(end, 4)],
        "fps": fps,
        "frames": n_out,
        "timemap": timemap.to_json(),
        "settings": _settings(options, generator),
        "metrics": metrics,
        "source_tracking": source_tracking(source),
        "warnings": warnings_,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "realtime_factor": round(seg.duration_s / max(timings["total_s"], 1e-9), 2),
    }
    return LocalizeResult(anim, timemap, report)


def _whole(audio: Audio) -> Audio:
    """`audio` with its samples in memory (a windowed recording read at once): for the transcript steps,
    which need the whole recording."""
    return audio if isinstance(audio.samples, np.ndarray) else Audio(np.asarray(audio.samples), audio.sample_rate)


class _LineFrames:
    """The warped source performance (blended with keyframe curves) of model frames a..b-1 of the
    processed span and the generator's keypoints for them, computed on demand (the last window kept:
    the generator asks for a group with its margins, then localize for the group's frames)."""

    def __init__(self, source, timemap: TimeMap, fps: float, start: float, options: LocalizeOptions, kf, timings):
        src = source.animation
        self.source, self.timemap, self.fps, self.start, self.options = source, timemap, fps, start, options
        self.kf, self.timings = kf, timings
        self.blinks = None if options.stretch_blinks else BlinkWarp(src.values, src.fps, timemap)
        self._last: tuple[int, int, np.ndarray, np.ndarray] | None = None

    def frames(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(warped source, performance) of frames a..b-1 (frames x 61 float32)."""
        last = self._last
        if last is not None and last[0] <= a and b <= last[1]:
            return last[2][a - last[0]:b - last[0]], last[3][a - last[0]:b - last[0]]
        t = time.perf_counter()
        src = self.source.animation
        dub_times = self.start + np.arange(a, b, dtype=np.float64) / self.fps
        warped = (warp_values(src.values, src.fps, self.timemap.source_time(dub_times)) if self.blinks is None
                  else self.blinks(dub_times))
        performance = warped
        if self.kf is not None:
            kf = warp_values(self.kf, self.fps, dub_times)  # the processed span
            performance = blend_performance(warped, kf, self.options.keyframe_blend)
        self._last = (a, b, warped, performance)
        self.timings["warp_s"] = self.timings.get("warp_s", 0.0) + time.perf_counter() - t
        return warped, performance

    def keypoints(self, a: int, b: int) -> np.ndarray:
        _, performance = self.frames(a, b)
        t = time.perf_counter()
        src = self.source.animation
        dub_times = self.start + np.arange(a, b, dtype=np.float64) / self.fps
        kp = performance_keypoints(self.source, performance, self.timemap.source_time(dub_times), src.fps)
        self.timings["keypoints_s"] = self.timings.get("keypoints_s", 0.0) + time.perf_counter() - t
        return kp


def _model_blocks(blocks, n: int):
    """The lower face's (first frame, values) blocks fitted to n frames (as _fit_frames does to the whole)."""
    done = 0
    last = None
    for a, v in blocks:
        v = np.asarray(v, np.float32)[:max(0, n - done)]
        if len(v):
            yield done, v
            done += len(v)
            last = v[-1:]
    if done < n and last is not None:
        yield done, np.repeat(last, n - done, axis=0)


class _OutputFrames:
    """Model-rate blocks -> output-rate blocks as the whole take gets them: Animation.resampled's linear
    interpolation (the same neighbours, so the same numbers) when the rates differ, then _fit_frames to
    n_out frames and the blendshapes clamped to 0..1. Blocks are yielded as (first output frame, values)."""

    def __init__(self, model_fps: float, fps: float, n_model: int, n_out: int) -> None:
        self.model_fps, self.fps, self.n_model, self.n_out = model_fps, fps, n_model, n_out
        self.same = abs(fps - model_fps) <= 1e-9
        self.n_res = n_model if self.same else max(1, int(round(n_model / model_fps * fps)))
        self.emitted = 0  # output frames made so far
        self.buf: np.ndarray | None = None  # model frames buf_start.. (resampling only)
        self.buf_start = 0
        self.last: np.ndarray | None = None

    def _check(self, a: int, values: np.ndarray) -> None:
        if not np.all(np.isfinite(values)):
            bad = a + int(np.argwhere(~np.isfinite(values))[0][0])
            raise InputError(f"animation has NaN/inf values (first at frame {bad})")

    def _emit(self, v: np.ndarray):
        v = np.asarray(v, np.float32)[:max(0, self.n_out - self.emitted)]
        if not len(v):
            return
        v = v.copy()
        v[:, :NUM_BLENDSHAPES] = np.clip(v[:, :NUM_BLENDSHAPES], 0.0, 1.0)
        j0 = self.emitted
        self.emitted += len(v)
        self.last = v[-1:]
        yield j0, v

    def push(self, a: int, values: np.ndarray):
        self._check(a, values)
        if self.same:
            yield from self._emit(values)
            return
        self.buf = values if self.buf is None else np.concatenate([self.buf, values])
        yield from self._resample(final=False)

    def _resample(self, final: bool):
        have = self.buf_start + len(self.buf)
        j1 = self.n_res
        if not final:  # output frames whose right neighbour has arrived
            j1 = min(j1, int(np.floor((have - 1) / self.model_fps * self.fps)) + 1)
            while j1 > self.emitted and (j1 - 1) / self.fps > (have - 1) / self.model_fps:
                j1 -= 1
        j0 = min(self.emitted, self.n_res)
        if j1 > j0:
            t_new = np.arange(j0, j1) / self.fps
            t_old = np.arange(self.buf_start, have) / self.model_fps
            v = np.stack([np.interp(t_new, t_old, self.buf[:, c]) for c in range(NUM_CHANNELS)], axis=1)
            yield from self._emit(v)
        if not final:  # keep the model frames the next output frame needs
            keep = max(0, min(int(np.floor(j1 / self.fps * self.model_fps)) - 1, have - 1) - self.buf_start)
            self.buf, self.buf_start = self.buf[keep:], self.buf_start + keep

    def finish(self):
        if not self.same and self.buf is not None:
            yield from self._resample(final=True)
        if self.emitted < self.n_out and self.last is not None:
            yield from self._emit(np.repeat(self.last, self.n_out - self.emitted, axis=0))


class _LineMetrics:
    """The line's metrics gathered block by block from the output frames -- lip-audio lag, bilabial closure
    on the dub's /p b m/ (with a transcript), brow correlation with the warped source, jitter of the output
    curves; null where they cannot be computed -- from per-frame curves only (mouth opening, lip gap, brow)
    and the jitter sums, so the metrics of an hour cost a few MB."""

    def __init__(self, src_anim: Animation, timemap: TimeMap, start: float, fps: float, with_gap: bool) -> None:
        self.src, self.timemap, self.start, self.fps, self.with_gap = src_anim, timemap, start, fps, with_gap
        self.mouth: list[np.ndarray] = []
        self.gap: list[np.ndarray] = []
        self.brow_out: list[np.ndarray] = []
        self.brow_src: list[np.ndarray] = []
        self.jit_sum, self.jit_count, self.n = 0.0, 0, 0
        self.tail: np.ndarray | None = None
        try:
            from . import metrics
        except ImportError:
            metrics = None
        self.m = metrics

    def add(self, j0: int, values: np.ndarray) -> None:
        m = self.m
        if m is None:
            return
        from .arkit import index

        v = np.asarray(values, np.float64)
        self.n += len(v)
        ext = v[:, :NUM_BLENDSHAPES] if self.tail is None else np.concatenate([self.tail, v[:, :NUM_BLENDSHAPES]])
        if len(ext) >= 3:
            d = np.abs(np.diff(ext, n=2, axis=0))
            self.jit_sum += float(d.sum())
            self.jit_count += d.size
        self.tail = ext[-2:].copy()  # copies: a view would keep the whole block alive (an hour: 26 MB of them)
        self.mouth.append(m.mouth_opening(v))
        if self.with_gap:
            self.gap.append(m.normalized_lip_gap(v))
        ch = index("browInnerUp")
        times = np.arange(j0, j0 + len(v), dtype=np.float64) / self.fps + self.start
        self.brow_out.append(np.array(values[:, ch], np.float32))
        self.brow_src.append(warp_values(self.src.values[:, ch:ch + 1], self.src.fps,
                                         self.timemap.source_time(times))[:, 0])

    def result(self, dub: Audio, phonemes) -> dict:
        out: dict = {"lip_audio_lag_frames": None, "bilabial_closure_rate": None, "bilabials": None,
                     "brow_inner_up_corr": None, "jitter": None}
        m = self.m
        if m is None:
            return out
        from .audio import rms_envelope

        out["jitter"] = round(self.jit_sum / self.jit_count if self.n >= 3 and self.jit_count else 0.0, 6)
        try:
            env = rms_envelope(dub.samples, dub.sample_rate, self.fps).astype(np.float64)
            out["lip_audio_lag_frames"] = int(m.best_lag(*m.lags_and_correlation(np.concatenate(self.mouth), env)))
        except DubtoolError:
            pass
        if phonemes:
            try:
                checks = m.closures_from_gap(np.concatenate(self.gap), phonemes, self.fps)
                out["bilabials"] = len(checks)
                out["bilabial_closure_rate"] = float(np.mean([c.closed for c in checks])) if checks else None
            except DubtoolError:
                pass
        a, b = np.concatenate(self.brow_out), np.concatenate(self.brow_src)
        if a.std() > 1e-6 and b.std() > 1e-6:
            out["brow_inner_up_corr"] = round(float(np.corrcoef(a, b)[0, 1]), 4)
        return out


def performance_keypoints(source, performance: np.ndarray, source_times_s: np.ndarray, source_fps: float) -> np.ndarray:
    """(T, 174) generator conditioning for the warped upper face: the rig posed by the curves
    (`keypoints_from_curves`, what the model is trained on); falls back to the tracked canonical
    landmarks warped the same way when the rig-based function is not available."""
    from . import keypoints as kp

    if hasattr(kp, "keypoints_from_curves"):
        return np.asarray(kp.keypoints_from_curves(performance), np.float32)
    canonical = warp_values(source.landmarks_canonical, source_fps, source_times_s)
    neutral = kp.neutral_from_track(source.landmarks_canonical, source.face_found)
    return kp.keypoint_features(canonical, neutral, performance)


def _fit_frames(values: np.ndarray, n: int) -> np.ndarray:
    v = np.asarray(values, np.float32)
    if len(v) == n:
        return v
    if len(v) > n:
        return v[:n]
    return np.concatenate([v, np.repeat(v[-1:], n - len(v), axis=0)], axis=0)


def source_tracking(source) -> dict:
    """How well the face was tracked in the source take (from its extract metadata): the share of
    frames with a face, the untracked gaps and how many were too long to interpolate (held still),
    and the video it was tracked from. Unknown figures are null (a .perf made by other tools)."""
    meta = getattr(source, "meta", {}) or {}
    gaps = meta.get("gaps")
    video = meta.get("source")
    return {"face_found_ratio": meta.get("face_found_ratio"),
            "gaps": None if gaps is None else len(gaps),
            "long_gaps": meta.get("long_gaps"),
            "untracked_s": None if gaps is None else round(sum(float(g.get("duration_s", 0)) for g in gaps), 3),
            "video": video if isinstance(video, str) and Path(video).suffix.lower() in VIDEO_SUFFIXES else None}


def _settings(options: LocalizeOptions, generator) -> dict:
    s = asdict(options)
    s.pop("align")
    s["align"] = asdict(options.align)
    if generator is not None:
        s["generator"] = dict(getattr(generator, "meta", {}) or {})
        sampler = getattr(generator, "sampler", None)
        if sampler is not None:
            s["steps"] = options.steps if options.steps is not None else getattr(sampler, "steps", None)
            s["guidance"] = options.guidance if options.guidance is not None else getattr(sampler, "guidance", None)
    return json.loads(json.dumps(s, default=str))


# --- the file-level job -------------------------------------------------------------------------

def default_report_path(out_csv: str | os.PathLike) -> Path:
    p = Path(out_csv)
    return p.with_name(p.stem + ".report.json")


def localize_files(source_path: str | os.PathLike, dub_path: str | os.PathLike, out_csv: str | os.PathLike,
                   options: LocalizeOptions = LocalizeOptions(), report_path: str | os.PathLike | None = None,
                   fbx: str | None = None, gltf: str | None = None, preview: str | None = None,
                   generator=None, progress=None) -> dict:
    """Load, localize, write the outputs. Returns the report (with `outputs` filled in). `progress(done,
    total)` follows the preview's frames.

    All or nothing: the outputs are staged and appear together (the CSV last) only when every one
    was written; a failure leaves none of them."""
    with staged_outputs(fbx, gltf, preview, report_path or default_report_path(Path(out_csv)), out_csv):
        return _localize_files(source_path, dub_path, out_csv, options, report_path, fbx, gltf, preview, generator,
                               progress)


def _localize_files(source_path, dub_path, out_csv, options, report_path, fbx, gltf, preview, generator,
                    progress=None) -> dict:
    """localize_files' work (inside its staging).

    Order matters for resuming batches: extras and the report are written first, the CSV last, so
    an existing CSV means the whole line finished."""
    from .livelink import write_csv

    options.validate()
    t0 = time.perf_counter()
    out_csv = Path(out_csv)
    if out_csv.suffix.lower() != ".csv":
        raise InputError(f"output must be a .csv file (Live Link Face CSV), got {out_csv}")
    if preview and Path(preview).suffix.lower() != ".mp4":
        raise InputError(f"--preview must be an .mp4 file, got {preview}")
    check_export_paths(fbx, gltf)
    require_distinct_outputs({"SOURCE": source_path, "DUB": dub_path, "--keyframes": options.keyframes,
                              "--model-path": options.model_path},
                             {"-o": out_csv, "--report": report_path or default_report_path(out_csv), "--fbx": fbx,
                              "--gltf": gltf, "--preview": preview})
    require_writable(out_csv, report_path or default_report_path(out_csv), fbx, gltf, preview)
    model_loaded = _prefetch_generator(options, generator)
    try:
        dub = load_audio(dub_path, what="dub audio", windowed=True)
        require_speech(dub, str(dub_path))
        source = load_source(source_path)
    finally:  # also on a bad input: a process exiting while onnxruntime builds a session in a thread aborts
        model_loaded()
    if fbx or gltf or preview:  # these need the whole animation
        result = localize(source, dub, options, generator)
        csv_done = False
    else:  # the CSV is written as the frames come: flat memory whatever the dub's length
        result = _localize_to_csv(source, dub, options, generator, out_csv)
        csv_done = True
    anim = result.animation
    report = result.report
    report["source"], report["dub"] = str(source_path), str(dub_path)
    outputs = {"csv": str(out_csv)}
    if fbx:
        from .fbx import write_fbx

        write_fbx(anim, fbx)
        outputs["fbx"] = str(fbx)
    if gltf:
        from .gltf import write_gltf

        write_gltf(anim, gltf)
        outputs["gltf"] = str(gltf)
    if preview:
        import tempfile

        from .audio import write_wav
        from .render import render_video

        with tempfile.TemporaryDirectory() as td:
            audio_path = dub_path
            if options.start_s or options.end_s is not None:  # the preview's sound is the processed span
                a, b = report["span_s"]
                audio_path = write_wav(Audio(dub.samples[int(a * dub.sample_rate):int(b * dub.sample_rate)],
                                             dub.sample_rate), Path(td) / "span.wav")
            render_video(anim, preview, audio=audio_path, progress=progress)
        outputs["preview"] = str(preview)
    rp = Path(report_path) if report_path else default_report_path(out_csv)
    outputs["report"] = str(rp)
    report["outputs"] = outputs
    report["timings_s"]["job_total_s"] = round(time.perf_counter() - t0, 4)
    write_text_atomic(rp, compact_json(report))
    if not csv_done:
        write_csv(anim, out_csv)
    return report


def _localize_to_csv(source, dub: Audio, options: LocalizeOptions, generator, out_csv: Path) -> LocalizeResult:
    """localize() with its frames streamed into the CSV at `out_csv` (atomic: nothing there on failure;
    inside localize_files' staging it appears with the other outputs). The result's animation is None."""
    from .livelink import CsvBlockWriter

    with contextlib.ExitStack() as stack:
        def sink(fps: float, frames: int, timecode_start_s: float):
            return stack.enter_context(CsvBlockWriter(out_csv, fps, frames, timecode_start_s)).write

        return localize(source, dub, options, generator, sink=sink)

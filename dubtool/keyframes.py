"""The script pass (after KeyframeFace, arXiv 2512.11321): dialogue text with context and emotion
cues -> semantic keyframes (time or word anchor, a description of the facial action, an ARKit
target) -> eased upper-face curves that `localize --keyframes` uses to drive the upper face.

Two stages as in the paper: (a) input standardisation, script -> structured keyframe descriptions;
(b) descriptions -> ARKit vectors. The offline planner does both with a FACS/emotion lexicon and a
sentence-embedding prototype matcher (dubtool.expressions); `keyframes_llm` does them with a
user's OpenAI-compatible server. Either way the result is validated data, never code.

Only upper-face blendshapes, head and eye rotations are keyed; the lower face comes from speech.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import arkit
from .phonemes import Word
from .arkit import Animation
from .errors import InputError
from .expressions import (DEFAULT_EASE_S, DEFAULT_PULSE_EASE_S, DRIVEN_CHANNELS, Prototype, PrototypeMatcher,
                          clamp_value, combine, for_side, load_library, spoken_cues)
from .fileio import atomic_path, require_file
from .script_reading import CUE_MIN_SCORE, PROSE_MIN_SCORE, is_narration, read_dialogue, read_directions

FORMAT_VERSION = 1
EASES = ("cubic", "hermite", "linear", "hold", "pulse")
MAX_HOLD_S = 30.0
MAX_EASE_S = 5.0
EXPRESSION_LEAD_S = 0.12  # faces move slightly ahead of the voice
BLINKS_PER_MIN = 17.0  # conversational blink rate
PULSE_RELEASE = 1.8  # a pulse returns this many times slower than it rises (blinks: 70 ms close, ~130 ms open)

_DRIVEN_LOWER = {c.lower(): c for c in DRIVEN_CHANNELS}
_ALL_LOWER = {c.lower(): c for c in arkit.CHANNEL_NAMES}


@dataclass(frozen=True)
class Keyframe:
    """A semantic keyframe: at `time_s` the keyed channels reach their values, hold for `hold_s`,
    then stay until a later keyframe changes them. `ease` is how they move into this key
    (over `ease_s` seconds); `pulse` keys are transients that return to the underlying curve.

    `word` ("what" or "what#2" for its second occurrence) anchors the key to a spoken word; then
    `time_s` is that word's start plus `offset_s`."""

    time_s: float
    description: str
    channels: dict[str, float]
    ease: str = "cubic"
    hold_s: float = 0.0
    ease_s: float | None = None
    word: str | None = None
    offset_s: float = 0.0

    @property
    def transition_s(self) -> float:
        if self.ease_s is not None:
            return self.ease_s
        return DEFAULT_PULSE_EASE_S if self.ease == "pulse" else DEFAULT_EASE_S

    def to_dict(self) -> dict:
        d: dict = {}
        if self.word is not None:
            d["word"] = self.word
            if self.offset_s:
                d["offset_s"] = round(self.offset_s, 3)
        else:
            d["time_s"] = round(self.time_s, 3)
        d["description"] = self.description
        order = sorted(self.channels, key=arkit.index)
        d["channels"] = {k: round(float(self.channels[k]), 4) for k in order}
        d["ease"] = self.ease
        d["hold_s"] = round(self.hold_s, 3)
        if self.ease_s is not None:
            d["ease_s"] = round(self.ease_s, 3)
        return d


@dataclass(frozen=True)
class KeyframeTrack:
    """A line's keyframes and what they are anchored to (its words and their timings)."""

    duration_s: float
    fps: float
    keyframes: tuple[Keyframe, ...]
    text: str = ""
    words: tuple[Word, ...] = ()
    blinks_per_min: float = BLINKS_PER_MIN
    seed: int = 0
    source: str = "offline"
    version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "duration_s": round(self.duration_s, 3),
            "fps": self.fps,
            "text": self.text,
            "source": self.source,
            "blinks_per_min": self.blinks_per_min,
            "seed": self.seed,
            "words": [{"word": w.text, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
                      for w in self.words],
            "keyframes": [k.to_dict() for k in self.keyframes],
        }


# ---------------------------------------------------------------------------------------------
# Validation: the one gate for files a user edits and for what a language model returns.


def _number(value, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where}: {what} must be a number, got {value!r}"[:300])
    v = float(value)
    if not math.isfinite(v):
        raise InputError(f"{where}: {what} is not finite")
    return v


def _norm_word(w: str) -> str:
    return re.sub(r"[^\w']", "", w.lower())


def resolve_word(anchor: str, words: tuple[Word, ...], where: str) -> Word:
    """The word an anchor names: "what" = first occurrence, "what#2" = second."""
    if not isinstance(anchor, str) or not anchor.strip():
        raise InputError(f"{where}: word anchor must be a non-empty string")
    text, _, nth = anchor.strip().partition("#")
    n = 1
    if nth:
        if not nth.isdigit() or int(nth) < 1:
            raise InputError(f"{where}: bad word anchor {anchor!r} (use 'word' or 'word#2')")
        n = int(nth)
    key = _norm_word(text)
    hits = [w for w in words if _norm_word(w.text) == key]
    if len(hits) < n:
        raise InputError(f"{where}: word {anchor!r} is not in the line"
                         + ("" if words else " (the file lists no words)"))
    return hits[n - 1]


def parse_channels(obj, where: str, strict: bool, warnings: list[str]) -> dict[str, float]:
    """Validated channel targets. Unknown names are errors; lower-face channels are errors in a
    file (strict) and dropped with a warning from a model; out-of-range values are errors in a file
    and clamped with a warning from a model."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: channels must be an object of name: value")
    out: dict[str, float] = {}
    for name, value in obj.items():
        if not isinstance(name, str):
            raise InputError(f"{where}: channel names must be strings")
        canon = _DRIVEN_LOWER.get(name.lower())
        if canon is None:
            if name.lower() in _ALL_LOWER:
                msg = (f"{where}: channel {name} is lower-face (driven by speech); keyframes key only "
                       f"upper-face, head and eye channels")
                if strict:
                    raise InputError(msg)
                warnings.append(msg + "; dropped")
                continue
            raise InputError(f"{where}: unknown channel {name!r}; use ARKit names such as browInnerUp, "
                             f"eyeWideLeft, HeadPitch")
        v = _number(value, where, f"channel {name}")
        c = clamp_value(canon, v)
        if abs(c - v) > 1e-6:
            lo_hi = "0..1" if canon not in arkit.ROTATION_NAMES else "its rotation limit"
            msg = f"{where}: channel {canon} = {v:g} is outside {lo_hi}"
            if strict:
                raise InputError(msg)
            warnings.append(msg + f"; clamped to {c:g}")
        out[canon] = c
    return out


def parse_keyframe(obj, where: str, duration_s: float, words: tuple[Word, ...], strict: bool,
                   warnings: list[str], fill: Callable[[str], dict[str, float]] | None = None) -> Keyframe:
    """One keyframe object -> Keyframe, with every field checked (see docs/keyframes.md)."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: must be an object")
    allowed = {"time_s", "word", "offset_s", "description", "channels", "ease", "hold_s", "ease_s"}
    extra = sorted(set(obj) - allowed)
    if extra:
        msg = f"{where}: unknown field(s) {', '.join(map(repr, extra))}"
        if strict:
            raise InputError(msg)
        warnings.append(msg + "; ignored")
    desc = obj.get("description", "")
    if not isinstance(desc, str):
        raise InputError(f"{where}: description must be a string")
    desc = " ".join(desc.split())[:300]
    has_t, has_w = obj.get("time_s") is not None, obj.get("word") is not None
    if has_t == has_w:
        raise InputError(f"{where}: give exactly one of time_s or word")
    offset = _number(obj.get("offset_s", 0.0), where, "offset_s")
    word = None
    if has_t:
        t = _number(obj["time_s"], where, "time_s")
    else:
        word = str(obj["word"]).strip() if isinstance(obj["word"], str) else obj["word"]
        t = resolve_word(word, words, where).start_s + offset
    tol = 1e-3
    if not (-tol <= t <= duration_s + tol):
        raise InputError(f"{where}: time {t:.3f} s is outside the line (0..{duration_s:.3f} s)")
    t = min(max(t, 0.0), duration_s)
    ease = obj.get("ease", "cubic")
    if ease not in EASES:
        raise InputError(f"{where}: ease must be one of {', '.join(EASES)}, got {ease!r}"[:200])
    hold = _number(obj.get("hold_s", 0.0), where, "hold_s")
    if not 0.0 <= hold <= MAX_HOLD_S:
        if strict:
            raise InputError(f"{where}: hold_s must be 0..{MAX_HOLD_S:g}, got {hold:g}")
        warnings.append(f"{where}: hold_s {hold:g} clamped")
        hold = min(max(hold, 0.0), MAX_HOLD_S)
    ease_s = obj.get("ease_s")
    if ease_s is not None:
        ease_s = _number(ease_s, where, "ease_s")
        if not 0.0 <= ease_s <= MAX_EASE_S:
            if strict:
                raise InputError(f"{where}: ease_s must be 0..{MAX_EASE_S:g}, got {ease_s:g}")
            ease_s = min(max(ease_s, 0.0), MAX_EASE_S)
    if "channels" in obj:
        channels = parse_channels(obj["channels"], where, strict, warnings)
    elif fill is not None and desc:
        channels = fill(desc)  # stage (b): description -> ARKit by the offline matcher
    else:
        raise InputError(f"{where}: no channels")
    return Keyframe(t, desc, channels, ease, hold, ease_s, word, offset if word else 0.0)


def _parse_words(items, where: str) -> tuple[Word, ...]:
    if not isinstance(items, list):
        raise InputError(f"{where}: words must be a list")
    out = []
    for i, w in enumerate(items):
        at = f"{where}: words[{i}]"
        if not isinstance(w, dict) or not isinstance(w.get("word"), str):
            raise InputError(f"{at}: must be {{word, start_s, end_s}}")
        s, e = _number(w.get("start_s"), at, "start_s"), _number(w.get("end_s"), at, "end_s")
        if e < s:
            raise InputError(f"{at}: end_s before start_s")
        out.append(Word(w["word"], s, e))
    return tuple(out)


def track_from_dict(data, source: str = "<keyframes>") -> KeyframeTrack:
    """A KeyframeTrack from parsed JSON, validated strictly (InputError naming the problem)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: top level must be a JSON object")
    version = data.get("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise InputError(f"{source}: unsupported keyframes version {version!r} (this dubtool reads {FORMAT_VERSION})")
    duration = _number(data.get("duration_s"), source, "duration_s")
    if not 0 < duration <= 4 * 3600:
        raise InputError(f"{source}: duration_s must be positive, got {duration:g}")
    fps = _number(data.get("fps", 30.0), source, "fps")
    if not 1 <= fps <= 240:
        raise InputError(f"{source}: fps must be 1..240, got {fps:g}")
    words = _parse_words(data.get("words", []), source)
    items = data.get("keyframes")
    if not isinstance(items, list):
        raise InputError(f"{source}: 'keyframes' must be a list")
    warnings: list[str] = []
    kfs = [parse_keyframe(k, f"{source}: keyframe {i + 1}", duration, words, True, warnings)
           for i, k in enumerate(items)]
    kfs.sort(key=lambda k: k.time_s)
    rate = _number(data.get("blinks_per_min", BLINKS_PER_MIN), source, "blinks_per_min")
    if not 0 <= rate <= 60:
        raise InputError(f"{source}: blinks_per_min must be 0..60, got {rate:g}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"{source}: seed must be an integer")
    return KeyframeTrack(duration, fps, tuple(kfs), str(data.get("text", "")), words, rate, seed,
                         str(data.get("source", "file")))


def load_keyframes(path: str | os.PathLike) -> KeyframeTrack:
    """Read and validate a keyframes JSON file (InputError naming the file and the problem)."""
    p = require_file(path, "keyframes file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{p}: not a UTF-8 text file") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: line {e.lineno}: invalid JSON ({e.msg})") from None
    return track_from_dict(data, str(p))


def save_keyframes(track: KeyframeTrack, path: str | os.PathLike) -> Path:
    text = json.dumps(track.to_dict(), indent=2, ensure_ascii=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Interpolation: per-channel eased curves, pulses, automatic blinks.


def ease_in_out_cubic(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return np.where(u < 0.5, 4 * u ** 3, 1 - (-2 * u + 2) ** 3 / 2)


def _hermite(u, p0, p1, m0, m1, span):
    u = np.clip(u, 0.0, 1.0)
    h00 = 2 * u ** 3 - 3 * u ** 2 + 1
    h10 = u ** 3 - 2 * u ** 2 + u
    h01 = -2 * u ** 3 + 3 * u ** 2
    h11 = u ** 3 - u ** 2
    return h00 * p0 + h10 * span * m0 + h01 * p1 + h11 * span * m1


def _channel_curve(times: np.ndarray, keys: list[Keyframe], name: str) -> np.ndarray:
    """One channel through its (non-pulse) keys. Before the first key the channel rests at 0; each
    key holds until the next key's transition (`ease_s` long, starting no earlier than the end of the
    previous key's hold unless that leaves no room); after the last key it holds. Every transition
    starts from the curve's actual value, so close keys never make the curve jump."""
    out = np.zeros_like(times)
    if not keys:
        return out
    merged: list[Keyframe] = []
    for k in keys:  # keys at the same instant: the later one wins
        if merged and abs(k.time_s - merged[-1].time_s) < 1e-3:
            merged[-1] = k
        else:
            merged.append(k)
    pts = [(-1e9, 0.0, 0.0)] + [(k.time_s, k.channels[name], k.hold_s) for k in merged]
    # Hermite tangents (PCHIP-style: zero at extrema and at holds, so no overshoot).
    slopes = [(pts[i + 1][1] - pts[i][1]) / max(1e-6, pts[i + 1][0] - pts[i][0]) for i in range(len(pts) - 1)]
    tangents = [0.0] * len(pts)
    for i in range(1, len(pts) - 1):
        a, b = slopes[i - 1], slopes[i]
        if a * b > 0 and pts[i][2] == 0:
            tangents[i] = 2 * a * b / (a + b)
    pieces: list[tuple[float, Callable[[np.ndarray], np.ndarray]]] = [(-np.inf, lambda t: np.zeros_like(t))]

    def value_at(t: float) -> float:
        # Piece starts never decrease (each starts at or after the previous key), so the piece in
        # force at a new piece's start is the last one: O(1) instead of a scan (linear in keys).
        return float(pieces[-1][1](np.array([t]))[0])

    for i in range(1, len(pts)):
        (t0, _, h0), (t1, v1, _), key = pts[i - 1], pts[i], merged[i - 1]
        ease_s = key.transition_s
        if key.ease == "hermite" and i > 1:
            start = t0 + min(h0, 0.5 * (t1 - t0))
        else:
            start = max(t0 + h0, t1 - ease_s)
            if start > t1 - 0.5 * min(ease_s, t1 - t0):  # hold too long for the next key: cut it
                start = max(t0, t1 - min(ease_s, t1 - t0))
        start = min(start, t1)
        v0 = value_at(start)
        span = t1 - start
        if key.ease == "hold" or span <= 1e-9:
            fn = (lambda v0, t1, v1: lambda t: np.where(t < t1, v0, v1))(v0, t1, v1)
        elif key.ease == "linear":
            fn = (lambda v0, v1, st, sp: lambda t: v0 + (v1 - v0) * np.clip((t - st) / sp, 0, 1))(v0, v1, start, span)
        elif key.ease == "hermite":
            m0 = tangents[i - 1] if (i > 1 and h0 == 0) else 0.0
            fn = (lambda v0, v1, st, sp, m0, m1: lambda t: np.where(
                t >= st + sp, v1, _hermite((t - st) / sp, v0, v1, m0, m1, sp)))(v0, v1, start, span, m0, tangents[i])
        else:
            fn = (lambda v0, v1, st, sp: lambda t: v0 + (v1 - v0) * ease_in_out_cubic((t - st) / sp))(v0, v1, start, span)
        pieces.append((start, fn))
    starts = np.array([p[0] for p in pieces])
    bounds = np.searchsorted(times, starts, side="left")  # times are sorted: each piece owns a slice
    bounds = np.append(bounds, len(times))
    for j, (_, fn) in enumerate(pieces):
        lo, hi = bounds[j], bounds[j + 1]
        if hi > lo:
            out[lo:hi] = fn(times[lo:hi])
    return out


def pulse_envelope(times: np.ndarray, time_s: float, hold_s: float, attack_s: float) -> np.ndarray:
    """0..1 envelope of a transient: smooth rise over `attack_s` to `time_s`, hold, smooth fall."""
    attack = max(attack_s, 1e-3)
    release = attack * PULSE_RELEASE
    rise = ease_in_out_cubic((times - (time_s - attack)) / attack)
    fall = 1.0 - ease_in_out_cubic((times - (time_s + hold_s)) / release)
    return np.minimum(rise, fall)


def _apply_pulse(values: np.ndarray, times: np.ndarray, k: Keyframe, col: dict[str, int]) -> None:
    attack = max(k.transition_s, 1e-3)
    # The envelope is zero outside its rise-hold-fall window: touch only those frames (linear overall).
    lo = int(np.searchsorted(times, k.time_s - attack, side="left"))
    hi = int(np.searchsorted(times, k.time_s + k.hold_s + attack * PULSE_RELEASE, side="right"))
    if hi <= lo:
        return
    env = pulse_envelope(times[lo:hi], k.time_s, k.hold_s, k.transition_s)
    for name, v in k.channels.items():
        c = col[name]
        if name in arkit.ROTATION_NAMES:
            values[lo:hi, c] += env * v  # a nod moves relative to the current head pose
        else:
            values[lo:hi, c] += env * (v - values[lo:hi, c])  # a blink closes fully whatever the lids did


def blink_times(duration_s: float, values: np.ndarray, fps: float, keyframes: tuple[Keyframe, ...],
                rate_per_min: float, seed: int) -> list[float]:
    """Natural blink onsets: a gamma renewal process at `rate_per_min`, moved out of frames where
    the keyframes hold the eyes wide (surprise) or closed, and away from keyed blinks/winks."""
    if rate_per_min <= 0 or duration_s < 0.5:
        return []
    rng = np.random.default_rng(seed)
    blocked = np.zeros(values.shape[0], bool)
    wide = np.maximum(values[:, arkit.index("eyeWideLeft")], values[:, arkit.index("eyeWideRight")])
    closed = np.maximum(values[:, arkit.index("eyeBlinkLeft")], values[:, arkit.index("eyeBlinkRight")])
    blocked |= (wide > 0.25) | (closed > 0.5)
    n = values.shape[0]
    for k in keyframes:
        if any(c in k.channels for c in ("eyeBlinkLeft", "eyeBlinkRight")) and k.ease == "pulse":
            r = 0.8 + k.hold_s  # frames within r of the keyed blink
            lo, hi = max(0, int(np.ceil((k.time_s - r) * fps - 1e-9))), min(n, int(np.floor((k.time_s + r) * fps + 1e-9)) + 1)
            f = np.arange(lo, hi)
            blocked[f[np.abs(f / fps - k.time_s) < r]] = True
    blocked = np.convolve(blocked.astype(float), np.ones(max(1, int(0.25 * fps))), "same") > 0
    # next_free[f]: the first unblocked frame at or after f (n when none), computed once.
    idx = np.where(~blocked, np.arange(n), n)
    next_free = np.minimum.accumulate(idx[::-1])[::-1] if n else idx
    mean = 60.0 / rate_per_min
    out, now = [], float(rng.uniform(0.3, 0.8) * mean)
    while now < duration_s - 0.3:
        f = int(now * fps)
        if f < n and blocked[f]:
            if next_free[f] >= n:
                break
            now = int(next_free[f]) / fps + 0.1
            continue
        out.append(round(now, 3))
        now += max(1.0, float(rng.gamma(4.0, mean / 4.0)))
    return out


def keyframe_curves(track: KeyframeTrack, fps: float, duration_s: float, blinks: bool = True) -> Animation:
    """The track as a 61-channel Animation at `fps` over `duration_s`: eased keyed channels,
    pulses on top, natural blinks where the keys allow them. Lower-face channels stay 0."""
    if not (fps > 0 and duration_s > 0):
        raise InputError(f"keyframe curves need positive fps and duration, got {fps}, {duration_s}")
    n = max(1, int(round(duration_s * fps)))
    times = np.arange(n, dtype=np.float64) / fps
    values = np.zeros((n, arkit.NUM_CHANNELS), np.float64)
    col = {name: arkit.index(name) for name in DRIVEN_CHANNELS}
    kfs = sorted(track.keyframes, key=lambda k: k.time_s)
    steady = [k for k in kfs if k.ease != "pulse"]
    for name in DRIVEN_CHANNELS:
        keys = [k for k in steady if name in k.channels]
        if keys:
            values[:, col[name]] = _channel_curve(times, keys, name)
    for k in kfs:
        if k.ease == "pulse":
            _apply_pulse(values, times, k, col)
    auto = blink_times(duration_s, values, fps, tuple(kfs), track.blinks_per_min, track.seed) if blinks else []
    blink = Keyframe(0.0, "blink", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}, "pulse", 0.02, 0.07)
    for t in auto:
        _apply_pulse(values, times, replace(blink, time_s=t), col)
    for name in DRIVEN_CHANNELS:
        values[:, col[name]] = np.clip(values[:, col[name]], *_limits(name))
    meta = {"keyframes": len(kfs), "auto_blinks_s": auto, "source": track.source}
    return Animation(values.astype(np.float32), fps, None, meta)


def _limits(name: str) -> tuple[float, float]:
    from .expressions import ROTATION_LIMITS_RAD

    lim = ROTATION_LIMITS_RAD.get(name)
    return (0.0, 1.0) if lim is None else (-lim, lim)


# ---------------------------------------------------------------------------------------------
# Stage (a) offline: script -> words, cues and moods -> keyframe descriptions.

_CUE = re.compile(r"\[([^\]]{1,300})\]|\(([^)]{1,300})\)|\*([^*]{1,300})\*")
_SPEAKER = re.compile(r"^\s*(?:[A-Z][A-Z0-9 _.'-]{0,30}|[A-Z][\w'.-]*(?: [A-Z][\w'.-]*){0,2}):\s+")
_CONTEXT = re.compile(r"^\s*(?:context|scene|mood|setting|contexte|scène|contexto|escena)\s*:\s*(.+)$", re.IGNORECASE)
_WORD = re.compile(r"[\w']+(?:-[\w']+)*")
_QUOTED = re.compile(r"[\"“«]([^\"”»]+)[\"”»]")


@dataclass
class ScriptLine:
    text: str  # spoken text, cues removed
    cues: list[tuple[int, str]]  # (word index the cue precedes, cue text)
    prose: list[bool] = field(default_factory=list)  # per cue: narration rather than a bracketed cue
    narration: bool = False  # the line is prose read as the timing of its own directions (no dialogue at all)


@dataclass
class Script:
    context: list[str] = field(default_factory=list)
    lines: list[ScriptLine] = field(default_factory=list)

    @property
    def spoken_text(self) -> str:
        return " ".join(l.text for l in self.lines if l.text)


def _split_cues(line: str) -> tuple[str, list[tuple[int, str]]]:
    cues: list[tuple[int, str]] = []
    spoken_parts, pos = [], 0
    for cm in _CUE.finditer(line):
        spoken_parts.append(line[pos:cm.start()])
        cue = next(g for g in cm.groups() if g is not None).strip()
        cues.append((len(_WORD.findall(" ".join(spoken_parts))), cue))
        pos = cm.end()
    spoken_parts.append(line[pos:])
    spoken = " ".join(" ".join(spoken_parts).split())
    return re.sub(r"\s+([,.;:!?…])", r"\1", spoken), cues


def parse_script(text: str) -> Script:
    """Script text -> context notes and dialogue lines with their cues.

    Format: one dialogue line per text line, optional `NAME:` speaker prefix, cues as [angry],
    (whispering) or *sighs* anywhere in the line, `Context: ...` lines for scene notes, # comments.
    Prose is a direction too: a narration line ("She opens the letter, gasps.") cues the next
    dialogue line, and in a line with quotes the words outside the quotes are directions. A script
    of narration only is timed as if read, its directions at their own words."""
    script = Script()
    pending: list[str] = []  # narration waiting for the next dialogue line
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _CONTEXT.match(line)
        if m:
            script.context.append(m.group(1).strip())
            continue
        line = _SPEAKER.sub("", line)
        quotes = list(_QUOTED.finditer(line))
        if quotes:  # She smiles. "I knew it." -> (She smiles.) I knew it.
            parts, pos = [], 0
            for q in quotes:
                outside = line[pos:q.start()].strip(" ,")
                if _WORD.search(outside):
                    parts.append(f"({outside.replace('(', ' ').replace(')', ' ')})")
                parts.append(q.group(1))
                pos = q.end()
            outside = line[pos:].strip(" ,.")
            if _WORD.search(outside):
                parts.append(f"({outside.replace('(', ' ').replace(')', ' ')})")
            line = " ".join(parts)
            n_prose = sum(1 for _ in re.finditer(r"\(", line))
        elif is_narration(_CUE.sub(" ", line)):
            pending.append(line)
            continue
        else:
            n_prose = 0
        spoken, cues = _split_cues(line)
        prose = [False] * len(cues)
        if quotes:
            prose = [True] * len(cues) if n_prose == len(cues) else prose
        if pending:
            cues = [(0, p) for p in pending] + cues
            prose = [True] * len(pending) + prose
            pending = []
        script.lines.append(ScriptLine(spoken, cues, prose))
    if pending:
        if script.lines:  # narration after the last line: directions at its end
            last = script.lines[-1]
            n = len(_WORD.findall(last.text))
            last.cues.extend((n, p) for p in pending)
            last.prose.extend(True for _ in pending)
        else:
            for p in pending:
                spoken, cues = _split_cues(p)
                script.lines.append(ScriptLine(spoken, [(0, spoken)] + cues, [True] + [False] * len(cues), True))
    return script


def _syllables(word: str) -> int:
    return max(1, len(re.findall(r"[aeiouyäöüàâéèêëîïôûùœæ]+", word.lower())))


def estimate_word_times(text: str, duration_s: float | None = None, start_s: float = 0.15,
                        end_pad_s: float = 0.2) -> tuple[tuple[Word, ...], float]:
    """Words of `text` spread over the line by syllable count with pauses at punctuation
    (about 4.5 syllables/s when no duration is given). Returns (words, duration_s)."""
    tokens = [(m.group(0), text[m.end():m.end() + 3]) for m in _WORD.finditer(text)]
    if not tokens:
        return (), duration_s or 1.0
    weights, pauses = [], []
    for w, after in tokens:
        weights.append(_syllables(w) / 4.5 + 0.04)
        after = after.lstrip(" ")[:1]
        pauses.append(0.35 if after in ".!?…" else 0.18 if after in ",;:—" else 0.0)
    pauses[-1] = 0.0
    natural = sum(weights) + sum(pauses)
    if duration_s is None:
        duration_s = natural + start_s + end_pad_s
    span = max(0.1, duration_s - start_s - end_pad_s)
    if span < 0.3 * natural:  # squeezed line: drop the padding
        start_s, span = 0.0, duration_s
    scale = span / natural
    out, t = [], start_s
    for (w, _), wt, p in zip(tokens, weights, pauses):
        out.append(Word(w, round(t, 3), round(t + wt * scale, 3)))
        t += (wt + p) * scale
    return tuple(out), float(duration_s)


@dataclass(frozen=True)
class PlanOptions:
    """Offline planner settings."""

    fps: float = 30.0
    seed: int = 0
    blinks_per_min: float = BLINKS_PER_MIN
    use_embedding: bool = True  # map cues the lexicon misses with the sentence-embedding model


@dataclass
class _Event:
    time_s: float
    word: str | None
    offset_s: float
    kind: str  # "mood" | "clause_mood" | "pulse" | "sustain"
    proto: Prototype
    intensity: float
    description: str
    end_s: float = 0.0  # sustained actions: when they release
    origin: str = ""  # "context" | "cue" | "prose" | "dialogue" | "spoken" | "prosody" | "emphasis"


@dataclass(frozen=True)
class PlannedExpression:
    """What the offline planner read from the script and keyed (stage a, before timing merges)."""

    name: str
    kind: str  # the prototype's kind: "emotion" | "action" | "prosody"
    intensity: float
    time_s: float
    origin: str


def _occurrences(words: tuple[Word, ...]) -> list[int]:
    """For each word, which occurrence of its text it is (1, 2, ...): word anchors in linear time."""
    seen: dict[str, int] = {}
    out = []
    for w in words:
        k = _norm_word(w.text)
        seen[k] = seen.get(k, 0) + 1
        out.append(seen[k])
    return out


def _anchor(words: tuple[Word, ...], i: int, occ: list[int]) -> tuple[str, float]:
    i = min(max(i, 0), len(words) - 1)
    w = words[i]
    return (w.text if occ[i] == 1 else f"{w.text}#{occ[i]}"), w.start_s


def _describe(proto: Prototype, intensity: float) -> str:
    if intensity < 0.7:
        return "slightly: " + proto.description
    if intensity > 1.15:
        return "strongly: " + proto.description
    return proto.description


def _scaled(proto: Prototype, intensity: float, scale: float = 1.0) -> dict[str, float]:
    return {k: clamp_value(k, v * intensity * scale) for k, v in proto.channels}


def plan_offline(script_text: str, duration_s: float | None = None, words: tuple[Word, ...] | None = None,
                 options: PlanOptions = PlanOptions(), matcher: PrototypeMatcher | None = None,
                 warnings: list[str] | None = None, trace: list[PlannedExpression] | None = None) -> KeyframeTrack:
    """The offline planner: directions, prose, context, interjections and punctuation of a script
    -> a KeyframeTrack. Linear in the script's length.

    Emotions a direction names ([angry], "gasps in shock", a context note at half strength) set a
    mood that holds until the next; actions ((nods), "frowns", (glances left)) become pulses or
    sustained poses at the word they precede, a direction's clauses spread over the words it
    governs in order; questions lift the brows on their last word; '!' and capitals intensify.
    `trace` (a list) receives what was read, for evaluation."""
    warnings = warnings if warnings is not None else []
    script = parse_script(script_text)
    text = script.spoken_text
    if not text.strip() and not any(l.cues for l in script.lines) and not script.context:
        raise InputError("script has no dialogue text or cues")
    if matcher is None and options.use_embedding:
        matcher = PrototypeMatcher()
    if matcher is None:
        matcher = PrototypeMatcher(use_embedding=False)
    if words is None:
        words, duration_s = estimate_word_times(text, duration_s)
    elif duration_s is None:
        duration_s = (words[-1].end_s + 0.3) if words else 1.0
    assert duration_s is not None
    library = load_library()
    occ = _occurrences(words)
    events: list[_Event] = []

    # Stage (a): every direction of the script read in two batches (one embedding call each).
    cue_texts = [(li, ci) for li, l in enumerate(script.lines) for ci in range(len(l.cues)) if not l.prose[ci]]
    prose_texts = [(li, ci) for li, l in enumerate(script.lines) for ci in range(len(l.cues)) if l.prose[ci]]
    readings: dict[tuple[int, int], list] = {}
    for keys, floor in ((cue_texts, CUE_MIN_SCORE), (prose_texts, PROSE_MIN_SCORE)):
        got = read_directions([script.lines[li].cues[ci][1] for li, ci in keys], matcher, floor, library)
        readings.update(zip(keys, got))
    for (li, ci), rs in readings.items():
        if not rs:
            warnings.append(f"direction {script.lines[li].cues[ci][1][:60]!r} names no expression")

    # Scene context sets the baseline mood at half strength; the line's own emotions override it.
    for rs in read_directions(script.context, matcher, PROSE_MIN_SCORE, library):
        for r in rs:
            if r.proto.kind == "emotion":
                events.append(_Event(0.0, None, 0.0, "mood", r.proto, 0.5 * r.intensity,
                                     _describe(r.proto, 0.5 * r.intensity), origin="context"))
                break

    mood_before = events[-1].proto.name if events else ""  # the mood in force when a line starts
    base = 0  # index of the line's first word among all words
    for li, line in enumerate(script.lines):
        line_words = _WORD.findall(line.text)
        n = len(line_words)
        line_events: list[_Event] = []
        # Directions: each reading at the word where its clause falls among the words the direction
        # governs (up to the next direction), in order; a narration-only line at its own words.
        for ci, (wi, cue) in enumerate(line.cues):
            if not words:
                continue
            nxt = line.cues[ci + 1][0] if ci + 1 < len(line.cues) else n
            origin = "prose" if line.prose[ci] else "cue"
            rs = readings.get((li, ci), [])
            groups = sorted({r.clause for r in rs})  # clauses that name something, spread in order
            for r in rs:
                if line.narration and ci == 0:
                    at_w = len(_WORD.findall(cue[:r.start]))
                else:
                    at_w = wi + (nxt - wi) * groups.index(r.clause) // len(groups)
                gi = base + min(at_w, max(n - 1, 0))
                pr = for_side(r.proto, cue[max(0, r.start - 40):r.end + 40])
                inten = min(1.3, r.intensity)
                if at_w >= n and n > 0:  # a direction after the last word acts at that word's end
                    tt, ww, off = min(duration_s, words[gi].end_s), None, 0.0
                else:
                    anchor, t = _anchor(words, gi, occ)
                    tt, ww, off = max(0.0, t - EXPRESSION_LEAD_S), anchor, -min(EXPRESSION_LEAD_S, t)
                line_events.append(_make_event(pr, tt, ww, off, inten, words, gi, origin=origin))
        if not line.narration:
            # Emotions the speaker states ("I'm so angry"), at the emotion word.
            for r in read_dialogue(line.text, library):
                gi = base + min(len(_WORD.findall(line.text[:r.start])), max(n - 1, 0))
                if not words:
                    continue
                anchor, t = _anchor(words, gi, occ)
                o = -min(EXPRESSION_LEAD_S, t)
                line_events.append(_make_event(r.proto, t + o, anchor, o, min(1.3, r.intensity), words, gi,
                                               origin="dialogue"))
        # Clauses: interjections, punctuation, capitals.
        for clause, c0, c1, punct in _clauses(line.text):
            gi0, gi1 = base + c0, base + c1 - 1
            if gi1 < gi0 or not words:
                continue
            louder = 1.0 + 0.15 * min(2, punct.count("!")) + (0.15 if _has_caps(clause) else 0.0)
            if not line.narration:
                for off_c, pr in spoken_cues(clause + punct, library):
                    wi = gi0 + len(_WORD.findall(clause[:off_c]))
                    anchor, t = _anchor(words, min(wi, gi1), occ)
                    o = -min(EXPRESSION_LEAD_S, t)
                    line_events.append(_make_event(pr, t + o, anchor, o, min(1.3, louder), words, min(wi, gi1), gi1,
                                                   origin="spoken"))
            if "?" in punct and "!" in punct:
                anchor, t = _anchor(words, gi0, occ)
                line_events.append(_make_event(_proto(library, "surprise"), max(0.0, t - EXPRESSION_LEAD_S), anchor,
                                               -min(EXPRESSION_LEAD_S, t), 0.8, words, gi0, gi1, origin="prosody"))
            elif "?" in punct:
                anchor, t = _anchor(words, gi1, occ)
                line_events.append(_make_event(_proto(library, "question"), t, anchor, 0.0, 1.0, words, gi1,
                                               origin="emphasis"))
            elif "!" in punct or _has_caps(clause):
                anchor, t = _anchor(words, gi1 if "!" in punct else _caps_index(clause, gi0), occ)
                # Emphasis: a brow flash, or a head downbeat when the face is frowning (anger).
                frowning = _mood_at(line_events, mood_before, t) in ("anger", "determination", "disgust", "contempt")
                emph = _proto(library, "nod" if frowning else "brow_raise")
                line_events.append(_make_event(emph, t, anchor, 0.0, 0.6 if frowning else 0.8 * louder, words, gi1,
                                               origin="emphasis"))
            elif punct.startswith(("...", "…")) and not line.narration:
                anchor, t = _anchor(words, gi1, occ)
                line_events.append(_make_event(_proto(library, "thinking"), t, anchor, 0.0, 0.6, words, gi1, gi1,
                                               origin="prosody"))
        mood_before = _mood_at(line_events, mood_before, float("inf"))
        events.extend(line_events)
        base += n

    if words and any(e.origin == "context" for e in events):
        # A line that opens on its own emotion overrides the scene's baseline before it shows.
        first = words[0].start_s
        if any(e.kind == "mood" and e.origin != "context" and e.time_s <= first + 0.05 for e in events):
            events = [e for e in events if e.origin != "context"]
    if trace is not None:
        trace.extend(PlannedExpression(e.proto.name, e.proto.kind, round(e.intensity, 3), round(e.time_s, 3), e.origin)
                     for e in sorted(events, key=lambda e: e.time_s))
    kfs = _events_to_keyframes(events, duration_s, library)
    return KeyframeTrack(float(duration_s), options.fps, tuple(kfs), text, tuple(words),
                         options.blinks_per_min, options.seed, "offline")


def _mood_at(line_events: list[_Event], before: str, t: float) -> str:
    """The mood at `t` within a line: its latest mood event at or before `t`, else the mood the
    line started in (only the line's own events are scanned: linear overall)."""
    moods = [e for e in line_events if e.kind == "mood" and e.time_s <= t + 1e-6]
    return max(moods, key=lambda e: e.time_s).proto.name if moods else before


def _proto(library, name: str) -> Prototype:
    return next(p for p in library if p.name == name)


def _has_caps(clause: str) -> bool:
    return any(len(w) > 1 and w.isupper() and w.isalpha() for w in _WORD.findall(clause))


def _caps_index(clause: str, gi0: int) -> int:
    for i, w in enumerate(_WORD.findall(clause)):
        if len(w) > 1 and w.isupper() and w.isalpha():
            return gi0 + i
    return gi0


def _clauses(text: str):
    """(clause text, first word index, end word index, trailing punctuation) of a line."""
    out, wi = [], 0
    for m in re.finditer(r"([^,;:.!?…—]+)([,;:.!?…—]*)", text):
        clause, punct = m.group(1), m.group(2)
        n = len(_WORD.findall(clause))
        if n:
            out.append((clause, wi, wi + n, punct))
        wi += n
    return out


def _make_event(pr: Prototype, t: float, word: str | None, off: float, inten: float,
                words: tuple[Word, ...], gi: int, clause_end: int | None = None, origin: str = "") -> _Event:
    kind = "pulse" if pr.ease == "pulse" else ("mood" if pr.kind == "emotion" else "sustain")
    if clause_end is not None and kind == "mood" and pr.kind == "emotion":
        kind = "clause_mood"  # an interjection colours its clause, then the line's mood returns
    end = 0.0
    if kind in ("sustain", "clause_mood") and words:
        last = words[min(len(words) - 1, clause_end if clause_end is not None else gi)]
        end = max(last.end_s + 0.25, t + pr.hold_s + pr.ease_s)
    return _Event(max(0.0, t), word, off, kind, pr, inten, _describe(pr, inten), end, origin)


def _events_to_keyframes(events: list[_Event], duration_s: float, library) -> list[Keyframe]:
    """Simulate the face's sustained state through the events; each change becomes a keyframe that
    keys exactly the channels that change (and explicitly returns released channels)."""
    events = sorted(events, key=lambda e: e.time_s)
    kfs: list[Keyframe] = []
    mood: dict[str, float] = {}
    overlays: list[tuple[float, dict[str, float], str, str]] = []  # (until_s, pose, name, kind)
    state: dict[str, float] = {}
    prev_state: dict[str, float] = {}

    def composite(now: float) -> dict[str, float]:
        # An interjection's clause mood replaces the line mood; sustained actions combine on top.
        clause = [ov for until, ov, _, kind in overlays if kind == "clause_mood" and until > now]
        pose = dict(clause[-1]) if clause else dict(mood)
        for until, ov, _, kind in overlays:
            if kind == "sustain" and until > now:
                pose = combine([pose, ov])
        return pose

    def emit(t: float, new: dict[str, float], ev: _Event | None, desc: str) -> None:
        nonlocal state
        keys = set(state) | set(new)
        changed = {k: round(new.get(k, 0.0), 4) for k in keys if abs(new.get(k, 0.0) - state.get(k, 0.0)) > 1e-4}
        if not changed:
            return
        nonlocal prev_state
        last = kfs[-1] if kfs else None
        if last is not None and last.ease != "pulse" and abs(last.time_s - t) < 0.05:
            # Two changes at one instant (a cue and an interjection): one keyframe to the final state.
            base = prev_state
            keys = set(base) | set(new)
            merged = {k: round(new.get(k, 0.0), 4) for k in keys if abs(new.get(k, 0.0) - base.get(k, 0.0)) > 1e-4}
            kfs[-1] = replace(last, channels=merged, description=desc if ev is not None else last.description)
            state = {k: v for k, v in new.items() if abs(v) > 1e-4}
            return
        prev_state = dict(state)
        if ev is not None:
            kfs.append(Keyframe(round(t, 3), desc, changed, ev.proto.ease if ev.proto.ease != "pulse" else "cubic",
                                min(ev.proto.hold_s, 1.0), ev.proto.ease_s, ev.word, round(ev.offset_s, 3)))
        else:
            kfs.append(Keyframe(round(t, 3), desc, changed, "cubic", 0.0, 0.4))
        state = {k: v for k, v in new.items() if abs(v) > 1e-4}

    # Releases of overlays are timed events too.
    timeline: list[tuple[float, int, _Event | None, str]] = [(e.time_s, 1, e, "") for e in events]
    for e in events:
        if e.kind in ("sustain", "clause_mood"):
            timeline.append((min(e.end_s, duration_s), 0, None, e.proto.name))
    timeline.sort(key=lambda x: (x[0], x[1]))
    last_pulse: dict[str, float] = {}
    mood_name, mood_intensity = "", 0.0
    for t, _, ev, released in timeline:
        if ev is None:
            overlays = [o for o in overlays if not (o[2] == released and o[0] <= t + 1e-6)]
            emit(t, composite(t), None, f"{released.replace('_', ' ')} fades")
            continue
        if ev.kind == "pulse":
            if t - last_pulse.get(ev.proto.name, -9.0) < 0.6:
                continue  # the same transient twice in a row reads as a stutter
            last_pulse[ev.proto.name] = t
            for dt, scale in ev.proto.pattern:
                tt = t + dt
                if tt > duration_s:
                    break
                word = ev.word if dt == 0 else None
                kfs.append(Keyframe(round(tt, 3), ev.description if dt == 0 else f"{ev.proto.description} (again)",
                                    _scaled(ev.proto, ev.intensity, scale), "pulse", ev.proto.hold_s,
                                    ev.proto.ease_s, word, round(ev.offset_s, 3) if word else 0.0))
            continue
        if ev.kind in ("mood", "clause_mood") and ev.proto.name == mood_name and ev.intensity <= mood_intensity:
            continue  # already showing this emotion at least this strongly
        if ev.kind == "mood":
            mood, mood_name, mood_intensity = _scaled(ev.proto, ev.intensity), ev.proto.name, ev.intensity
            overlays = [o for o in overlays if o[3] != "clause_mood"]
        else:
            overlays = [o for o in overlays if not (o[3] == ev.kind and (ev.kind == "clause_mood" or o[2] == ev.proto.name))]
            overlays.append((ev.end_s, _scaled(ev.proto, ev.intensity), ev.proto.name, ev.kind))
        emit(t, composite(t), ev, ev.description)
    kfs.sort(key=lambda k: k.time_s)
    return kfs


# ---------------------------------------------------------------------------------------------
# Word timings from a dub recording.


def words_from_audio(audio_path: str | os.PathLike, text: str, lang: str = "en") -> tuple[tuple[Word, ...], float]:
    """(words, duration_s) for the dub: phoneme alignment through dubtool.phonealign when that module
    is present, else the words spread over the voiced span of the recording."""
    from .audio import load_audio, require_speech, rms_envelope
    from .lang import language

    language(lang)  # an unknown --lang is the user's error, not an aligner failure to fall back from
    audio = load_audio(audio_path, what="dub audio")
    require_speech(audio, str(audio_path))
    duration = audio.duration_s
    try:
        from . import phonealign  # type: ignore[attr-defined]

        align_words = getattr(phonealign, "align_words", None)
    except ImportError:
        align_words = None
    if align_words is not None:
        try:
            aligned = align_words(audio, text, lang)
            ws = tuple(Word(str(w[0]), float(w[1]), float(w[2])) if isinstance(w, (tuple, list))
                       else Word(str(w.text), float(w.start_s), float(w.end_s)) for w in aligned)
            if ws:
                return ws, duration
        except Exception:  # an aligner failure must not lose the line: fall back to the energy span
            pass
    fps = 100.0
    env = rms_envelope(audio.samples, audio.sample_rate, fps)
    db = 20 * np.log10(np.maximum(env, 1e-8))
    voiced = np.nonzero(db > db.max() - 30.0)[0]
    if voiced.size == 0:
        words, _ = estimate_word_times(text, duration)
        return words, duration
    start, end = voiced[0] / fps, min(duration, (voiced[-1] + 1) / fps)
    words, _ = estimate_word_times(text, end - start + 1e-3, start_s=0.0, end_pad_s=0.0)
    return tuple(Word(w.text, round(w.start_s + start, 3), round(w.end_s + start, 3)) for w in words), duration


# ---------------------------------------------------------------------------------------------
# The job and the plot.


def plan_keyframes(script_text: str, duration_s: float | None = None, words: tuple[Word, ...] | None = None,
                   options: PlanOptions = PlanOptions(), llm=None, matcher: PrototypeMatcher | None = None,
                   log: Callable[[str], None] = lambda m: None) -> KeyframeTrack:
    """Script -> KeyframeTrack, by the user's language model when `llm` (a keyframes_llm.LLMConfig, or
    anything with its `plan` method) is given, else (or when the model fails and fallback is allowed) by the offline planner."""
    warnings: list[str] = []
    if words is None:
        words, duration_s = estimate_word_times(parse_script(script_text).spoken_text, duration_s)
    elif duration_s is None:
        duration_s = (words[-1].end_s + 0.3) if words else 1.0
    if llm is not None:
        track = llm.plan(script_text, float(duration_s), tuple(words), options, log=log, matcher=matcher)
        if track is not None:
            return track
    track = plan_offline(script_text, duration_s, words, options, matcher, warnings)
    for w in warnings:
        log(f"warning: {w}")
    return track


def plot_curves(anim: Animation, track: KeyframeTrack, path: str | os.PathLike) -> Path:
    """PNG of the keyed curves (brows, lids, gaze, head) with the keyframes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("brows", ["browInnerUp", "browOuterUpLeft", "browOuterUpRight", "browDownLeft", "browDownRight"]),
        ("lids", ["eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight", "eyeSquintLeft",
                  "eyeSquintRight", "cheekSquintLeft", "noseSneerLeft"]),
        ("gaze (rad)", ["LeftEyeYaw", "RightEyeYaw", "LeftEyePitch", "RightEyePitch"]),
        ("head (rad)", ["HeadYaw", "HeadPitch", "HeadRoll"]),
    ]
    t = anim.times_s
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 8), sharex=True)
    for ax, (title, names) in zip(axes, groups):
        for name in names:
            y = anim.channel(name)
            if np.any(np.abs(y) > 1e-4):
                ax.plot(t, y, label=name, lw=1.3)
        for k in track.keyframes:
            ax.axvline(k.time_s, color="0.75", lw=0.7, ls="--" if k.ease == "pulse" else "-")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="upper right", fontsize=7, ncol=3)
    top = axes[0]
    for k in track.keyframes:
        top.annotate(k.description[:28], (k.time_s, 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                     rotation=30, va="bottom")
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)

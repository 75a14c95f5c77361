"""Source <-> dub timing: phrase-level alignment of two recordings in different languages and voices.

Frame-level spectral DTW does not apply across languages and speakers, so alignment works on the
speech/pause structure both recordings share:

1. `segment_speech`: energy-based speech/pause segmentation (10 ms frames, thresholds relative to
   the recording's own noise floor and peak, hysteresis, minimum pause and phrase lengths).
2. `match_phrases`: monotonic dynamic programming over the two phrase lists, allowing 1:1, 1:2,
   2:1 (and 1:3, 3:1) groupings; the cost compares relative durations (after the global speaking-rate
   ratio), relative positions in the line, and charges for merging across pauses.
3. Transcripts (optional): each text is split into clauses at punctuation; when both lines have the
   same number of clauses, each real recording is aligned to its own espeak-ng synthesis by MFCC
   DTW, which places the clause boundaries in time. Those cross-language anchors steer the DP and
   add knots inside phrases.
4. The time map is piecewise linear through the matched phrase starts and ends (`timemap.TimeMap`).

Also here: `plot_alignment` (waveforms with matched phrases joined, for a person to check) and
`fit_dub` (time-stretch the dub onto the source timing with rubberband).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, Audio, window_energy
from .errors import DependencyError, InputError, SilenceError
from .fileio import atomic_path
from .timemap import PhraseMatch, TimeMap, build_timemap, uniform_timemap

FRAME_RATE = 100.0  # segmentation frames per second
MAX_DTW_FRAMES = 5000  # per side: bounds transcript-alignment memory (~0.4 GB) on long lines


@dataclass(frozen=True)
class Segment:
    """A speech span in seconds."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class AlignConfig:
    """Segmentation and phrase-matching settings (defaults tuned on the asterisk en/fr/es prompts)."""

    min_pause_s: float = 0.18     # shorter silences are bridged (stop closures, breaths)
    min_phrase_s: float = 0.10    # shorter bursts are dropped (clicks)
    range_fraction: float = 0.55  # enter-speech threshold: peak - fraction * (peak - floor), capped ...
    max_depth_db: float = 32.0    # ... at this many dB below the peak
    hysteresis_db: float = 8.0    # leave speech this far below the enter threshold
    max_group: int = 3            # largest k in 1:k / k:1 phrase groupings
    w_duration: float = 1.0       # cost of |log relative duration mismatch|
    w_position: float = 2.0       # cost of relative position mismatch (fraction of the line)
    w_group: float = 0.25         # cost per extra phrase merged into a group
    w_pause: float = 1.5          # cost of merged-over pause time (fraction of the group's span)
    w_text: float = 1.0           # cost per transcript anchor a group pair disagrees on
    anchor_tolerance_s: float = 0.15


def segment_speech(audio: Audio, config: AlignConfig = AlignConfig()) -> list[Segment]:
    """Speech spans of a recording by frame energy with hysteresis."""
    x = audio.samples
    sr = audio.sample_rate
    hop = sr / FRAME_RATE
    n = int(np.ceil(len(x) / hop))
    if n == 0:
        return []
    win = int(round(2.5 * hop))
    starts = (np.arange(n) * hop).astype(np.int64)
    rms = np.sqrt(np.maximum(window_energy(x, starts, win), 0.0))
    db = 20 * np.log10(np.maximum(rms, 1e-7))  # -140 dBFS floor for digital silence
    peak = float(np.percentile(db, 99))
    floor = float(np.percentile(db, 10))
    enter = max(peak - min(config.max_depth_db, config.range_fraction * (peak - floor)), -70.0)
    leave = enter - config.hysteresis_db
    speech = np.zeros(n, bool)
    on = False
    for i, v in enumerate(db):  # hysteresis: enter above `enter`, stay until below `leave`
        on = v >= (leave if on else enter)
        speech[i] = on
    # Runs of speech frames -> segments; bridge short pauses, drop short bursts.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
    segs = [[a / FRAME_RATE, b / FRAME_RATE] for a, b in zip(edges[::2], edges[1::2])]
    merged: list[list[float]] = []
    for s in segs:
        if merged and s[0] - merged[-1][1] < config.min_pause_s:
            merged[-1][1] = s[1]
        else:
            merged.append(s)
    dur = len(x) / sr
    return [Segment(max(0.0, a), min(dur, b)) for a, b in merged if b - a >= config.min_phrase_s]


def _group_cost(src: list[Segment], dub: list[Segment], i0: int, i1: int, j0: int, j1: int,
                ctx: dict, config: AlignConfig) -> float:
    s0, s1 = src[i0].start_s, src[i1 - 1].end_s
    d0, d1 = dub[j0].start_s, dub[j1 - 1].end_s
    cost = config.w_duration * abs(np.log(max(d1 - d0, 1e-3) / max(ctx["rate"] * (s1 - s0), 1e-3)))
    ps = ((s0 - ctx["s_first"]) / ctx["s_span"], (s1 - ctx["s_first"]) / ctx["s_span"])
    pd = ((d0 - ctx["d_first"]) / ctx["d_span"], (d1 - ctx["d_first"]) / ctx["d_span"])
    cost += config.w_position * 0.5 * (abs(ps[0] - pd[0]) + abs(ps[1] - pd[1]))
    extra = (i1 - i0 - 1) + (j1 - j0 - 1)
    if extra:
        pause_s = sum(src[k + 1].start_s - src[k].end_s for k in range(i0, i1 - 1))
        pause_d = sum(dub[k + 1].start_s - dub[k].end_s for k in range(j0, j1 - 1))
        cost += config.w_group * extra + config.w_pause * (pause_s / (s1 - s0) + pause_d / (d1 - d0))
    tol = config.anchor_tolerance_s
    for a_s, a_d in ctx["anchors"]:
        side_s = -1 if s1 <= a_s + tol else (1 if s0 >= a_s - tol else 0)
        side_d = -1 if d1 <= a_d + tol else (1 if d0 >= a_d - tol else 0)
        if side_s != side_d:
            cost += config.w_text
    return float(cost)


def match_phrases(src: list[Segment], dub: list[Segment], config: AlignConfig = AlignConfig(),
                  anchors: list[tuple[float, float]] = ()) -> list[PhraseMatch]:
    """Monotonic many-to-few matching of source phrases to dub phrases covering both lists.

    Dynamic programming over (source phrases used, dub phrases used); each step consumes a 1:k or
    k:1 group (k <= max_group). Returns one PhraseMatch per group, in order.
    """
    n, m = len(src), len(dub)
    if n == 0 or m == 0:
        return []
    ctx = {"s_first": src[0].start_s, "d_first": dub[0].start_s,
           "s_span": max(src[-1].end_s - src[0].start_s, 1e-3), "d_span": max(dub[-1].end_s - dub[0].start_s, 1e-3),
           "anchors": list(anchors)}
    ctx["rate"] = ctx["d_span"] / ctx["s_span"]
    steps = [(1, 1)] + [(1, k) for k in range(2, config.max_group + 1)] + [(k, 1) for k in range(2, config.max_group + 1)]
    cost = np.full((n + 1, m + 1), np.inf)
    back = np.zeros((n + 1, m + 1, 2), np.int64)
    cost[0, 0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if not np.isfinite(cost[i, j]):
                continue
            for a, b in steps:
                i1, j1 = i + a, j + b
                if i1 > n or j1 > m:
                    continue
                c = cost[i, j] + _group_cost(src, dub, i, i1, j, j1, ctx, config)
                if c < cost[i1, j1]:
                    cost[i1, j1] = c
                    back[i1, j1] = (a, b)
    if not np.isfinite(cost[n, m]):
        # Phrase counts too different for k <= max_group groupings: one group spanning everything.
        return [PhraseMatch(src[0].start_s, src[-1].end_s, dub[0].start_s, dub[-1].end_s, n, m,
                            _group_cost(src, dub, 0, n, 0, m, ctx, config))]
    out = []
    i, j = n, m
    while i > 0 or j > 0:
        a, b = (int(v) for v in back[i, j])
        i0, j0 = i - a, j - b
        out.append(PhraseMatch(src[i0].start_s, src[i - 1].end_s, dub[j0].start_s, dub[j - 1].end_s, a, b,
                               _group_cost(src, dub, i0, i, j0, j, ctx, config)))
        i, j = i0, j0
    return out[::-1]


# --- transcripts -------------------------------------------------------------------------------

# Latin punctuation splits only before whitespace (so "3.5" and "etc.," inside words stay whole);
# CJK full-width marks split wherever they are.
_CLAUSE_SPLIT = re.compile(r"(?<=[.!?;:,\u2026])\s+|(?<=[\u3002\uff0c\uff01\uff1f\uff1b\uff1a\u3001])\s*")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?\u2026])\s+|(?<=[\u3002\uff01\uff1f])\s*")


def split_clauses(text: str, level: str = "clause") -> list[str]:
    """Pieces of a line at punctuation: `clause` splits at . ! ? ; : , (and CJK marks), `sentence`
    only at sentence ends. Empty pieces are dropped."""
    pattern = _SENTENCE_SPLIT if level == "sentence" else _CLAUSE_SPLIT
    return [c.strip() for c in pattern.split(text.strip()) if re.search(r"\w", c)]


def _mfcc(samples: np.ndarray, sample_rate: int, fps: float = 50.0) -> np.ndarray:
    import librosa

    hop = max(1, int(round(sample_rate / fps)))
    m = librosa.feature.mfcc(y=np.asarray(samples, np.float32), sr=sample_rate, n_mfcc=13, hop_length=hop,
                             n_fft=512 if sample_rate <= 16000 else 2048)
    m = m[1:]  # drop c0 (loudness): the two voices differ in level
    m = (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-6)  # per-utterance CMVN
    return m


def synthesis_warp(audio: Audio, synth: Audio, fps: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Monotone correspondence (synth_times_s, real_times_s) between a recording and a synthesis of
    its text, by DTW over per-utterance-normalised MFCCs (c1..c12: timbre-neutral enough to bridge
    espeak and a human voice at the level of words and pauses)."""
    import librosa

    # The DTW cost matrix is frames x frames: cap both sides at MAX_DTW_FRAMES (a 60 s line keeps
    # 50 fps; a 10-minute one drops to ~8 fps, still finer than clause boundaries need).
    fps = min(fps, MAX_DTW_FRAMES / max(audio.duration_s, synth.duration_s, 1e-3))
    syn = np.asarray(synth.samples, np.float32)
    if synth.sample_rate != audio.sample_rate:
        syn = librosa.resample(syn, orig_sr=synth.sample_rate, target_sr=audio.sample_rate)
    rng = np.random.default_rng(0)  # a faint common noise floor: digital silence has no spectrum
    dither = lambda x: np.asarray(x, np.float32) + rng.normal(0, 1e-4, len(x)).astype(np.float32)
    real = _mfcc(dither(audio.samples), audio.sample_rate, fps)
    synth_f = _mfcc(dither(syn), audio.sample_rate, fps)
    _, wp = librosa.sequence.dtw(X=synth_f, Y=real, metric="euclidean", backtrack=True)
    wp = wp[::-1]
    n = synth_f.shape[1]
    real_of = np.zeros(n)
    for k in range(n):
        hits = wp[wp[:, 0] == k, 1]
        real_of[k] = np.median(hits) if hits.size else (real_of[k - 1] if k else 0.0)
    real_of = np.maximum.accumulate(real_of)
    return np.arange(n) / fps, real_of / fps


def clause_times(audio: Audio, text: str, voice: str, level: str = "clause") -> list[float] | None:
    """Times (s) in `audio` of the boundaries between the clauses of `text`, found by aligning the
    recording to an espeak-ng synthesis of the clauses by MFCC DTW. None when it cannot be done."""
    clauses = split_clauses(text, level)
    if len(clauses) < 2:
        return []
    try:
        from . import espeak
    except ImportError:
        return None
    # Clauses are synthesised with a pause between them so the recording's pauses have something to
    # match; a boundary is the middle of its synthetic pause.
    gap_s = 0.3
    pieces, bounds_s, t, sr_syn = [], [], 0.0, SAMPLE_RATE
    for k, clause in enumerate(clauses):
        syn = espeak.synthesize(clause, voice)
        sr_syn = int(syn.audio.sample_rate)
        if k:
            pieces.append(np.zeros(int(gap_s * sr_syn), np.float32))
            bounds_s.append(t + gap_s / 2)
            t += gap_s
        pieces.append(np.asarray(syn.audio.samples, np.float32))
        t += len(syn.audio.samples) / sr_syn
    syn_t, real_t = synthesis_warp(audio, Audio(np.concatenate(pieces), sr_syn))
    return [float(np.interp(b, syn_t, real_t)) for b in bounds_s]


def transcript_phonemes(audio: Audio, text: str, voice: str) -> list:
    """Phonemes of `text` timed on the recording: espeak-ng synthesis (phone times exact on the
    synthetic audio) warped onto `audio` by `synthesis_warp`."""
    from dataclasses import replace

    from . import espeak

    syn = espeak.synthesize(text, voice)
    syn_t, real_t = synthesis_warp(audio, syn.audio)
    out = []
    for p in syn.phonemes:
        a, b = (float(np.interp(x, syn_t, real_t)) for x in (p.start_s, p.end_s))
        if b > a:
            out.append(replace(p, start_s=a, end_s=b))
    return out


def snap_to_pause(t_s: float, segments: list[Segment], max_shift_s: float = 0.4) -> float:
    """Move a clause-boundary time to the middle of the nearest pause between phrases when one lies
    within `max_shift_s` (clause boundaries are usually spoken as pauses; DTW places them loosely)."""
    best, best_d = t_s, max_shift_s
    for a, b in zip(segments[:-1], segments[1:]):
        d = 0.0 if a.end_s <= t_s <= b.start_s else min(abs(t_s - a.end_s), abs(t_s - b.start_s))
        if d <= best_d:
            best, best_d = 0.5 * (a.end_s + b.start_s), d
    return best


def text_anchors(source: Audio, dub: Audio, source_text: str, dub_text: str, source_voice: str,
                 dub_voice: str) -> tuple[list[tuple[float, float]], str]:
    """Cross-language (source_s, dub_s) anchors at clause boundaries (or, when the clause counts
    differ, at sentence boundaries), and a note saying what was done."""
    for level in ("clause", "sentence"):
        ns, nd = len(split_clauses(source_text, level)), len(split_clauses(dub_text, level))
        if ns == nd:
            break
    else:
        return [], f"transcripts have {ns} vs {nd} sentences; no text anchors"
    if ns < 2:
        return [], f"transcripts are single {level}s; no text anchors"
    ts = clause_times(source, source_text, source_voice, level)
    td = clause_times(dub, dub_text, dub_voice, level)
    if ts is None or td is None:
        return [], "espeak module unavailable; transcripts not used"
    pairs = [(a, b) for a, b in zip(ts, td)]
    return pairs, f"{len(pairs)} {level} anchor(s) from transcripts"


# --- the time map ------------------------------------------------------------------------------

def align(source: Audio, dub: Audio, config: AlignConfig = AlignConfig(), source_text: str | None = None,
          dub_text: str | None = None, source_voice: str = "en", dub_voice: str = "fr") -> TimeMap:
    """Time map from source seconds to dub seconds (see the module docstring)."""
    src_dur, dub_dur = source.duration_s, dub.duration_s
    dub_segs = segment_speech(dub, config)
    if not dub_segs:
        raise SilenceError("dub audio: no speech found")
    src_segs = segment_speech(source, config)
    if not src_segs:
        return uniform_timemap(src_dur, dub_dur, "source has no speech; uniform stretch")
    notes: list[str] = [f"{len(src_segs)} source phrase(s), {len(dub_segs)} dub phrase(s)"]
    anchors: list[tuple[float, float]] = []
    method = "phrase-dp"
    if source_text and dub_text:
        anchors, note = text_anchors(source, dub, source_text, dub_text, source_voice, dub_voice)
        anchors = [(snap_to_pause(a, src_segs), snap_to_pause(b, dub_segs)) for a, b in anchors]
        notes.append(note)
        if anchors:
            method = "phrase-dp+text"
    ratio = dub_dur / src_dur
    if ratio > 3 or ratio < 1 / 3:
        notes.append(f"dub is {ratio:.1f}x the source length; upper-face motion will be stretched a lot")
    phrases = match_phrases(src_segs, dub_segs, config, anchors)
    pairs = []
    for p in phrases:
        pairs += [(p.source_start_s, p.dub_start_s), (p.source_end_s, p.dub_end_s)]
    tol = config.anchor_tolerance_s
    for a_s, a_d in anchors:  # clause boundaries inside a matched phrase become extra knots
        for p in phrases:
            if p.source_start_s + tol < a_s < p.source_end_s - tol and p.dub_start_s + tol < a_d < p.dub_end_s - tol:
                pairs.append((a_s, a_d))
    return build_timemap(src_dur, dub_dur, pairs, phrases, method, notes)


# --- outputs -----------------------------------------------------------------------------------

def plot_alignment(source: Audio, dub: Audio, tm: TimeMap, path: str | os.PathLike,
                   title: str | None = None) -> Path:
    """PNG: both waveforms, matched phrases shaded in the same colour and joined by lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import ConnectionPatch

    fig, axes = plt.subplots(2, 1, figsize=(12, 4.5))
    colors = plt.get_cmap("tab10")
    for ax, a, label in ((axes[0], source, "source"), (axes[1], dub, "dub")):
        step = max(1, len(a.samples) // 4000)
        t = np.arange(0, len(a.samples), step) / a.sample_rate
        ax.plot(t, a.samples[::step], lw=0.5, color="0.3")
        ax.set_xlim(0, max(tm.source_duration_s, tm.dub_duration_s))
        ax.set_ylabel(label)
        ax.set_yticks([])
    axes[1].set_xlabel("seconds")
    for k, p in enumerate(tm.phrases):
        col = colors(k % 10)
        axes[0].axvspan(p.source_start_s, p.source_end_s, color=col, alpha=0.25)
        axes[1].axvspan(p.dub_start_s, p.dub_end_s, color=col, alpha=0.25)
        for ts, td in ((p.source_start_s, p.dub_start_s), (p.source_end_s, p.dub_end_s)):
            fig.add_artist(ConnectionPatch(xyA=(ts, -1), coordsA=axes[0].transData, xyB=(td, 1),
                                           coordsB=axes[1].transData, color=col, lw=1.2))
        axes[0].text((p.source_start_s + p.source_end_s) / 2, 0.9, str(k + 1), ha="center", va="top",
                     transform=axes[0].get_xaxis_transform())
    for ax in axes:
        ax.set_ylim(-1, 1)
    fig.suptitle(title or f"{tm.method}: {len(tm.phrases)} matched phrase group(s)")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def fit_dub(dub: Audio, tm: TimeMap, mode: str = "phrase") -> Audio:
    """The dub time-stretched onto the source timing: phrase-wise (rubberband time map) or uniform
    (librosa phase vocoder). The result lasts `tm.source_duration_s`."""
    y = np.asarray(dub.samples, np.float32)
    sr = dub.sample_rate
    target_len = int(round(tm.source_duration_s * sr))
    if mode == "uniform":
        import librosa

        out = librosa.effects.time_stretch(y, rate=tm.dub_duration_s / tm.source_duration_s)
    elif mode == "phrase":
        import shutil

        import pyrubberband

        if not shutil.which("rubberband"):
            raise DependencyError("rubberband not found; install it (Debian/Ubuntu: apt-get install rubberband-cli)")
        k = tm.knots_array
        dub_samples = np.minimum(np.round(k[:, 1] * sr).astype(np.int64), len(y))
        src_samples = np.round(k[:, 0] * sr).astype(np.int64)
        dub_samples[-1] = len(y)
        src_samples[-1] = target_len
        time_map = [(int(a), int(b)) for a, b in zip(dub_samples, src_samples)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out = pyrubberband.timemap_stretch(y, sr, time_map)
            except (RuntimeError, OSError) as e:  # its scratch WAVs (libsndfile) or the rubberband program
                import tempfile

                raise InputError(f"cannot time-stretch the dub: rubberband's scratch files in "
                                 f"{tempfile.gettempdir()} could not be written or read ({e}); check the free "
                                 f"space there") from None
    else:
        raise InputError(f"unknown fit mode {mode!r}; use 'phrase' or 'uniform'")
    out = np.asarray(out, np.float32).reshape(-1)
    out = out[:target_len] if len(out) >= target_len else np.pad(out, (0, target_len - len(out)))
    return Audio(out, sr)

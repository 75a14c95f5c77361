"""The generator's training corpus, built by dubtool itself, reproducibly (seeded), on CPU.

Each clip is speech with exact phoneme timings plus the animation that should go with it:
  * speech: espeak-ng in many languages (voices, variants, rate, pitch varied; text from
    dubtool/data/sentences/<lang>.txt, mixed into pseudo-sentences), and real English, French and
    Spanish recordings (Debian's asterisk-core-sounds-{en,fr,es} prompts, phonemes aligned with
    `phonealign`);
  * augmentation of the waveform before the mel front end: speed +-10% (phoneme times scaled the
    same), synthetic-room reverb, EQ / band-limit or a telephone band (300-3400 Hz
    through an 8 kHz round trip, like the real recordings), noise at a random SNR, gain — so the model learns
    speech, not espeak's sound;
  * target: teacher lower face from the phonemes (+ the emotion's lower-face offset) + procedural
    upper face, head and eye motion;
  * keypoints: the rig posed with the upper-face channels on a per-actor face (random smooth
    identity offsets of the blendshape deltas and a face scale);
  * style: `style_context` of the whole clip's target.

Splits: 'train'; 'val_voice' (training languages spoken with held-out espeak variants);
'val_lang' (held-out languages, it and pt). Asterisk prompts whose sorted index (per language) % 5 == 0
and pocketsphinx-testdata are never used here: the eval set owns them.

Cached as compressed float16 arrays in <dir>/corpus.npz plus <dir>/clips.json.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from .arkit import LOWER_IDX, NUM_CHANNELS
from .errors import InputError

CORPUS_VERSION = 4  # 2: mel and keypoints stored as per-column 8-bit codes; mel may stack subframes;
# 3: per-frame viseme labels (the auxiliary target of the audio encoder); 4: target and offset as 8-bit
# codes too (an hour and a half of speech in ~50 MB, so it travels to a GPU machine)
SPLITS = ("train", "val_voice", "val_lang")
SENTENCE_DIR = Path(__file__).resolve().parent / "data" / "sentences"
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_DIRS = {"en": "en_US_f_Allison", "fr": "fr_CA_f_June", "es": "es_MX_f_Allison", "ru": "ru_RU_f_IvrvoiceRU"}
ASTERISK_EN = ASTERISK_SOUNDS / ASTERISK_DIRS["en"]
ASTERISK_EN_TEXT = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")


def asterisk_dir(lang: str) -> Path:
    return ASTERISK_SOUNDS / ASTERISK_DIRS[lang]


def asterisk_text_file(lang: str) -> Path:
    return Path(f"/usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz")



@dataclass(frozen=True)
class CorpusConfig:
    seed: int = 1234
    fps: float = 30.0
    espeak_clips: int = 270  # training clips synthesised
    val_voice_clips: int = 24
    val_lang_clips: int = 24
    asterisk_prompts: int = 240  # at most, English; training prompts only (sorted index % 5 != 0)
    asterisk_languages: tuple = ("en", "fr", "es")
    asterisk_prompts_other: int = 150  # at most, per non-English language (the cache must stay < 64 MiB)
    asterisk_per_clip: int = 3  # prompts are 1-4 s: joined into clips longer than a training window
    train_languages: tuple = ("en", "en-gb", "fr", "es", "de", "nl", "pl", "ru")
    val_languages: tuple = ("it", "pt")
    train_variants: tuple = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt3", "croak",
                             "adam", "linda", "steph", "Andy", "Annie", "boris", "max")
    val_variants: tuple = ("m7", "f4", "belinda", "david")
    rate_wpm: tuple = (120, 260)  # espeak speaking rate drawn from this range
    pitch: tuple = (25, 80)  # espeak base pitch 0..99
    pitch_range: tuple = (20, 90)  # espeak pitch range 0..99 (flat .. animated delivery)
    min_clip_s: float = 4.5
    max_clip_s: float = 9.0  # espeak text is added until min..max seconds
    max_frames: int = 300  # clips are cut to 10 s: keeps the cache inside the GPU tool's 64 MiB
    p_augment: float = 0.8
    p_telephone: float = 0.35  # share of espeak clips sent through a telephone band (real prompts are 8 kHz)
    audio_subframes: int = 1  # log-mel vectors per frame (must match the model's audio_subframes)
    audio_features: str = "mel"  # or speech_features.NAME; must match the model's, as must n_mels
    n_mels: int = 80  # log-mel bands, or projected speech-feature axes


@dataclass
class Corpus:
    """Clips concatenated along frames. Row ranges: starts[i] : starts[i] + lengths[i]."""

    mel: np.ndarray        # (N, 80 * audio_subframes) float16, gain-normalised log-mel (generate.normalize_mel)
    target: np.ndarray     # (N, 61) float16
    offset: np.ndarray     # (N, len(LOWER_IDX)) float16, the emotion's lower-face offset inside target
    keypoints: np.ndarray  # (N, 174) float16
    viseme: np.ndarray     # (N,) uint8 index into phonemes.VISEME_CLASSES of the phoneme under each frame
    style: np.ndarray      # (C, 122) float32
    starts: np.ndarray     # (C,) int64
    lengths: np.ndarray    # (C,) int64
    split: np.ndarray      # (C,) int8 index into SPLITS
    clips: list            # per clip: id, source, lang, voice, split, text, phonemes [[sym, start_s, end_s]]
    meta: dict

    def frame_mask(self, split: str) -> np.ndarray:
        rows = np.zeros(len(self.mel), bool)
        for i in np.flatnonzero(self.split == SPLITS.index(split)):
            rows[self.starts[i]:self.starts[i] + self.lengths[i]] = True
        return rows

    @property
    def duration_s(self) -> float:
        return float(self.lengths.sum()) / float(self.meta.get("fps", 30.0))


QUANTIZED = ("mel", "keypoints", "target", "offset")  # 8 bits per value is far below their noise (the
# targets' step is range/255, ~0.004 of a weight: ~0.05 mm of lip gap on the rig)
DELTA_CODED = ("keypoints", "target", "offset")  # smooth over frames: stored as frame-to-frame code
# differences (mod 256, exactly reversible), which zlib packs to half the size (keypoints 24 -> 12 MB)


def delta_encode(codes: np.ndarray) -> np.ndarray:
    """uint8 codes -> uint8 differences from the previous row (mod 256); `delta_decode` inverts it exactly."""
    return np.diff(codes, axis=0, prepend=np.zeros((1,) + codes.shape[1:], np.uint8)).astype(np.uint8)


def delta_decode(deltas: np.ndarray) -> np.ndarray:
    return np.cumsum(deltas, axis=0, dtype=np.uint8)


def quantize_columns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column 8-bit codes: x ~ lo + codes * step (error at most step / 2 = range / 510)."""
    x = np.asarray(x, np.float32)
    lo = x.min(axis=0) if len(x) else np.zeros(x.shape[1], np.float32)
    step = np.maximum((x.max(axis=0) - lo) / 255.0, 1e-8) if len(x) else np.ones(x.shape[1], np.float32)
    codes = np.clip(np.rint((x - lo) / step), 0, 255).astype(np.uint8)
    return codes, lo.astype(np.float32), step.astype(np.float32)


def dequantize_columns(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    return (codes.astype(np.float32) * step + lo).astype(np.float16)


def save_corpus(corpus: Corpus, out_dir) -> Path:
    """Write the cache: corpus.npz (arrays; mel, keypoints, target and offset as per-column 8-bit
    codes, so a corpus of an hour and a half of speech travels to a GPU machine) and clips.json."""
    from .fileio import atomic_path, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"viseme": corpus.viseme, "style": corpus.style, "starts": corpus.starts, "lengths": corpus.lengths,
              "split": corpus.split}
    for name in QUANTIZED:
        codes, arrays[f"{name}_lo"], arrays[f"{name}_step"] = quantize_columns(getattr(corpus, name))
        if name in DELTA_CODED:
            arrays[f"{name}_delta"] = delta_encode(codes)
        else:
            arrays[f"{name}_codes"] = codes
    with atomic_path(out / "corpus.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    write_text_atomic(out / "clips.json", json.dumps({"meta": corpus.meta, "clips": corpus.clips}))
    return out


def load_corpus(path) -> Corpus:
    p = Path(path)
    if not (p / "corpus.npz").is_file() or not (p / "clips.json").is_file():
        raise InputError(f"no corpus in {p} (expected corpus.npz and clips.json); build it with `dubtool corpus`")
    try:
        info = json.loads((p / "clips.json").read_text(encoding="utf-8"))
        version = info["meta"].get("version")
    except Exception as e:
        raise InputError(f"{p}: corpus is corrupt ({type(e).__name__}); delete it and rebuild") from None
    if version != CORPUS_VERSION:
        raise InputError(f"{p}: corpus version {version} != {CORPUS_VERSION}; delete it and rebuild")
    try:
        z = np.load(p / "corpus.npz")
        codes = {n: delta_decode(z[f"{n}_delta"]) if n in DELTA_CODED else z[f"{n}_codes"] for n in QUANTIZED}
        q = {n: dequantize_columns(codes[n], z[f"{n}_lo"], z[f"{n}_step"]) for n in QUANTIZED}
        c = Corpus(q["mel"], q["target"], q["offset"], q["keypoints"], z["viseme"], z["style"], z["starts"],
                   z["lengths"], z["split"], info["clips"], info["meta"])
    except Exception as e:
        raise InputError(f"{p}: corpus is corrupt ({type(e).__name__}); delete it and rebuild") from None
    return c


def check_fits(corpus: Corpus, dims, where) -> None:
    """Raise InputError unless `corpus` holds the audio features model `dims` reads: the same kind
    (log-mel or speech states) and the same width per frame (n_mels x audio_subframes)."""
    if corpus.mel.shape[1] != dims.mel_width:
        raise InputError(f"{where}: corpus audio features are {corpus.mel.shape[1]} wide but the model reads "
                         f"{dims.n_mels} x {dims.audio_subframes} subframes = {dims.mel_width}; use the corpus "
                         f"built with the model's config (or rebuild it with that config)")
    heard = corpus.meta.get("config", {}).get("audio_features", "mel")
    if heard != dims.audio_features:
        raise InputError(f"{where}: corpus audio features are {heard!r} but the model reads "
                         f"{dims.audio_features!r}; use the corpus built with the model's config (or rebuild it)")


# ----------------------------------------------------------------------------------------------
# Text


def load_sentences(lang: str) -> list[str]:
    p = SENTENCE_DIR / f"{lang.split('-')[0]}.txt"
    if not p.is_file():
        raise InputError(f"no sentence file for language {lang!r}: {p}")
    return [s.strip() for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]


def pseudo_sentence(sentences: list[str], rng: np.random.Generator) -> str:
    """A real sentence (half the time) or a new one of words drawn from the language's sentences:
    the phonotactics stay the language's own while the phoneme sequences keep changing."""
    if rng.random() < 0.5:
        return sentences[rng.integers(len(sentences))]
    words = [w for s in sentences for w in re.findall(r"[\w'’-]+", s)]
    n = int(rng.integers(4, 13))
    text = " ".join(words[i] for i in rng.integers(0, len(words), n))
    if rng.random() < 0.3:
        k = int(rng.integers(1, n))
        parts = text.split(" ")
        text = " ".join(parts[:k]) + ", " + " ".join(parts[k:])
    return text[0].upper() + text[1:] + ("?" if rng.random() < 0.2 else ".")


# ----------------------------------------------------------------------------------------------
# Audio augmentation (pure functions of samples + rng)


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch moves with it, like tape); length / factor."""
    from scipy.signal import resample_poly

    up = 1000
    down = int(round(1000 * factor))
    return resample_poly(samples, up, down).astype(np.float32)


def synthetic_reverb(samples: np.ndarray, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """Convolve with an exponentially decaying noise impulse response (RT60 0.15-0.7 s)."""
    from scipy.signal import fftconvolve

    rt60 = rng.uniform(0.15, 0.7)
    n = int(rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    ir *= rng.uniform(0.05, 0.4) / max(np.sqrt((ir ** 2).sum()), 1e-9)
    ir[0] = 1.0
    return fftconvolve(samples, ir)[: len(samples)].astype(np.float32)


def random_eq(samples: np.ndarray, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """Band-limit (telephone to full band) and tilt the spectrum."""
    from scipy.signal import butter, sosfilt

    lo = rng.uniform(40, 350)
    hi = rng.uniform(3000, 7600)
    sos = butter(4, [lo, hi], btype="band", fs=sample_rate, output="sos")
    y = sosfilt(sos, samples)
    if rng.random() < 0.5:  # first-order tilt: mix in a lowpassed or highpassed copy
        sos2 = butter(1, rng.uniform(500, 2500), btype="low" if rng.random() < 0.5 else "high", fs=sample_rate,
                      output="sos")
        y = y + rng.uniform(-0.5, 0.8) * sosfilt(sos2, y)
    return y.astype(np.float32)


def add_noise(samples: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """White, pink-ish or brown-ish noise at `snr_db` relative to the speech's active-part power."""
    n = rng.standard_normal(len(samples))
    colour = rng.integers(3)
    if colour:
        n = np.cumsum(n) if colour == 2 else np.convolve(n, np.ones(8) / 8, mode="same")
        n -= np.convolve(n, np.ones(801) / 801, mode="same")
    p_sig = np.mean(samples[np.abs(samples) > 0.02 * np.abs(samples).max()] ** 2) if np.any(samples) else 1e-6
    n *= np.sqrt(p_sig / 10 ** (snr_db / 10) / max(np.mean(n ** 2), 1e-12))
    return (samples + n).astype(np.float32)


def telephone_band(samples: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """300-3400 Hz band-pass and an 8 kHz resampling round trip: nothing is left above 4 kHz."""
    from scipy.signal import butter, resample_poly, sosfilt

    sos = butter(6, [300, 3400], btype="band", fs=sample_rate, output="sos")
    y = resample_poly(sosfilt(sos, samples), 1, 2)
    y = resample_poly(y, 2, 1)[: len(samples)]
    return np.pad(y, (0, len(samples) - len(y))).astype(np.float32)


def augment(samples: np.ndarray, rng: np.random.Generator, p: float,
            p_telephone: float = 0.0) -> tuple[np.ndarray, float, list[str]]:
    """Random chain of augmentations. Returns (samples, speed_factor, names applied)."""
    applied = []
    speed = 1.0
    if rng.random() < p:
        speed = float(rng.uniform(0.9, 1.1))
        samples = change_speed(samples, speed)
        applied.append(f"speed{speed:.2f}")
    if rng.random() < p * 0.5:
        samples = synthetic_reverb(samples, rng)
        applied.append("reverb")
    if p_telephone > 0 and rng.random() < p_telephone:
        samples = telephone_band(samples)
        applied.append("telephone")
    elif rng.random() < p * 0.6:
        samples = random_eq(samples, rng)
        applied.append("eq")
    if rng.random() < p * 0.6:
        snr = float(rng.uniform(8, 40))
        samples = add_noise(samples, rng, snr)
        applied.append(f"noise{snr:.0f}dB")
    gain = 10 ** (rng.uniform(-20, 0) / 20) / max(np.abs(samples).max(), 1e-6)
    return np.clip(samples * gain, -1, 1).astype(np.float32), speed, applied


# ----------------------------------------------------------------------------------------------
# Faces


class ActorFace:
    """A per-actor face: the rig's neutral and deltas with a random smooth identity offset and scale
    (only `.neutral` and `.deltas` are needed by keypoints_from_curves)."""

    def __init__(self, rig, rng: np.random.Generator):
        v = rig.neutral
        centre = v.mean(axis=0)
        scale = rng.uniform(0.85, 1.15)
        # Smooth identity field: a few random low-frequency sinusoids over the face.
        k = rng.normal(0, 0.35, (3, 3))
        phase = rng.uniform(0, 2 * np.pi, 3)
        u = (v - centre) / np.abs(v - centre).max()
        field = np.stack([np.sin(u @ k[i] * 2 + phase[i]) for i in range(3)], axis=1)
        self.neutral = ((v - centre) * scale + centre + 0.3 * field).astype(np.float32)
        gain = 1.0 + 0.15 * np.sin(u @ rng.normal(0, 1.0, 3) * 2 + rng.uniform(0, 2 * np.pi))
        self.deltas = (rig.deltas * (scale * gain)[None, :, None]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Clip building


def _speech_activity(samples: np.ndarray, fps: float) -> np.ndarray:
    from .audio import rms_envelope

    env = rms_envelope(samples, 16000, fps)
    return np.clip(env / max(float(np.percentile(env, 95)), 1e-6), 0, 1).astype(np.float32)


EMOTIONS_FALLBACK = ("neutral",)


def _emotions() -> tuple:
    try:
        from . import upperface

        names = getattr(upperface, "EMOTIONS", None)
        if names:
            return tuple(names)
    except ImportError:
        pass
    return EMOTIONS_FALLBACK


def make_clip(samples: np.ndarray, phonemes: list, rng: np.random.Generator, cfg: CorpusConfig, rig,
              augment_p: float, telephone_p: float = 0.0) -> dict:
    """One corpus clip from clean speech and its phonemes: augment, then mel, target, keypoints, style."""
    from .generate import audio_input, style_context
    from .keypoints import keypoints_from_curves
    from .phonemes import Phoneme
    from .teacher import lower_face_from_phonemes
    from .upperface import procedural_upper_face

    # Random lead-in / tail silence so the model sees the face at rest.
    pre, post = (np.zeros(int(rng.uniform(0.05, 0.5) * 16000), np.float32) for _ in range(2))
    shift = len(pre) / 16000
    samples = np.concatenate([pre, samples.astype(np.float32), post])
    phonemes = [Phoneme(p.symbol, p.start_s + shift, p.end_s + shift) for p in phonemes]
    aug, speed, applied = augment(samples, rng, augment_p, telephone_p)
    phonemes = [Phoneme(p.symbol, p.start_s / speed, p.end_s / speed) for p in phonemes]
    fps = cfg.fps
    mel = audio_input(aug, 16000, fps, cfg.audio_features, cfg.n_mels, cfg.audio_subframes)
    n = mel.shape[0]
    duration_s = n / fps
    lower = lower_face_from_phonemes(phonemes, duration_s, fps, intensity=float(rng.uniform(0.7, 1.2)), rng=rng)
    emotion = None if rng.random() < 0.35 else str(rng.choice(_emotions()))  # None: emotion segments
    uf = procedural_upper_face(duration_s, fps, rng, emotion=emotion, speech_activity=_speech_activity(aug, fps))
    target = _fit(np.asarray(uf.animation.values, np.float32), n).copy()
    offset = _fit(np.asarray(uf.lower_offset, np.float32), n) if uf.lower_offset is not None else np.zeros((n, 61))
    if offset.ndim == 1:
        offset = np.repeat(offset[None], n, axis=0)
    offset = offset[:, LOWER_IDX] if offset.shape[1] == NUM_CHANNELS else offset
    target[:, LOWER_IDX] = np.clip(_fit(lower.values, n)[:, LOWER_IDX] + offset, 0, 1)
    offset = target[:, LOWER_IDX] - _fit(lower.values, n)[:, LOWER_IDX]  # the offset as clipping left it
    target[:, :52] = np.clip(target[:, :52], 0, 1)
    kp = keypoints_from_curves(target, ActorFace(rig, rng))
    return {"mel": mel.astype(np.float16), "target": target.astype(np.float16), "offset": offset.astype(np.float16),
            "keypoints": kp.astype(np.float16), "viseme": viseme_labels(phonemes, n, fps), "style": style_context(target),
            "phonemes": [[p.symbol, round(p.start_s, 4), round(p.end_s, 4)] for p in phonemes],
            "augment": applied, "emotion": emotion or "mixed"}


def viseme_labels(phonemes, num_frames: int, fps: float) -> np.ndarray:
    """(num_frames,) uint8: the VISEME_CLASSES index of the Phoneme under each frame's centre
    (silence where none is)."""
    from .phonemes import VISEME_CLASSES, viseme_class

    out = np.zeros(num_frames, np.uint8)  # VISEME_CLASSES[0] is silence
    centres = (np.arange(num_frames) + 0.5) / fps
    for p in phonemes:
        out[(centres >= p.start_s) & (centres < p.end_s)] = VISEME_CLASSES.index(viseme_class(p.symbol))
    return out


def trim_clip(clip: dict, max_frames: int, fps: float) -> dict:
    """Cut a clip to its first `max_frames` frames (phonemes that start later are dropped)."""
    if len(clip["mel"]) <= max_frames:
        return clip
    out = dict(clip)
    for k in ("mel", "target", "offset", "keypoints", "viseme"):
        out[k] = clip[k][:max_frames]
    from .generate import style_context

    out["style"] = style_context(out["target"].astype(np.float32))
    end = max_frames / fps
    out["phonemes"] = [[p, a, min(b, end)] for p, a, b in clip["phonemes"] if a < end]
    return out


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(x)
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), axis=0)], axis=0)


def asterisk_transcripts(lang: str) -> dict[str, str]:
    """Prompt id (relative path without .wav, e.g. 'digits/5') -> transcript, from the
    asterisk-core-sounds-<lang> package's core-sounds-<lang>.txt.gz ({} when not installed)."""
    text_file = asterisk_text_file(lang)
    if not text_file.is_file():
        return {}
    texts = {}
    with gzip.open(text_file, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if ":" in line and not line.startswith(";"):
                name, text = line.split(":", 1)
                texts[name.strip()] = text.strip()
    return texts


def asterisk_prompt_wavs(lang: str) -> list[tuple[str, Path]]:
    """(prompt id, wav) sorted by relative path: the order the train/eval split indexes ([] when not installed)."""
    root = asterisk_dir(lang)
    if not root.is_dir():
        return []
    wavs = sorted(root.rglob("*.wav"), key=lambda p: str(p.relative_to(root)))
    return [(str(w.relative_to(root).with_suffix("")), w) for w in wavs]


def is_eval_prompt(index: int) -> bool:
    """The train/eval split of asterisk prompts: sorted index % 5 == 0 belongs to the eval set."""
    return index % 5 == 0


def is_spoken(text: str | None) -> bool:
    """A transcript of real words (not '[beep tone]'), at least two of them."""
    return bool(text) and not text.startswith("[") and len(re.findall(r"\w+", text)) >= 2


def asterisk_training_prompts(lang: str = "en") -> list[tuple[str, Path]]:
    """(transcript, wav) for the asterisk prompts of `lang` (en, fr, es) the corpus may use: not the
    eval set's (`is_eval_prompt`), with a spoken transcript."""
    texts = asterisk_transcripts(lang)
    return [(texts[key], w) for i, (key, w) in enumerate(asterisk_prompt_wavs(lang))
            if not is_eval_prompt(i) and is_spoken(texts.get(key))]


def _espeak_jobs(cfg: CorpusConfig) -> list[dict]:
    from .lang import voice_for  # the espeak voice of each sentence file's language

    rng = np.random.default_rng(cfg.seed)
    jobs = []
    plan = [("train", cfg.train_languages, cfg.train_variants, cfg.espeak_clips),
            ("val_voice", cfg.train_languages, cfg.val_variants, cfg.val_voice_clips),
            ("val_lang", cfg.val_languages, cfg.train_variants + cfg.val_variants, cfg.val_lang_clips)]
    for split, langs, variants, count in plan:
        for i in range(count):
            lang = langs[i % len(langs)]
            jobs.append({"id": f"espeak-{split}-{i:04d}", "source": "espeak", "split": split, "lang": lang,
                         "voice": voice_for(lang), "variant": str(variants[rng.integers(len(variants))]),
                         "rate": int(rng.integers(*cfg.rate_wpm)), "pitch": int(rng.integers(*cfg.pitch)),
                         "range": int(rng.integers(*cfg.pitch_range)), "seed": int(rng.integers(2 ** 31))})
    return jobs


def _run_job(job: dict, cfg: CorpusConfig) -> dict | None:
    from .rig import load_rig

    rng = np.random.default_rng(job["seed"])
    if job["source"] == "espeak":
        from .espeak import synthesize

        sentences = load_sentences(job["lang"])
        target_s = rng.uniform(cfg.min_clip_s, cfg.max_clip_s)
        texts, syn = [], None
        for _ in range(6):  # add sentences until the clip is long enough
            texts.append(pseudo_sentence(sentences, rng))
            syn = synthesize(" ".join(texts), job["voice"], job["rate"], job["pitch"], job["range"], job["variant"])
            if syn.audio.duration_s >= target_s:
                break
        samples, phonemes, text = syn.audio.samples, syn.phonemes, " ".join(texts)
    else:  # real speech: a few asterisk prompts joined by short pauses, each aligned on its own
        from .audio import load_audio
        from .phonealign import align_phonemes
        from .phonemes import Phoneme

        parts, phonemes, t = [], [], 0.0
        for text_i, wav in zip(job["texts"], job["wavs"]):
            audio = load_audio(wav)
            for p in align_phonemes(audio, text_i, job["lang"]):
                phonemes.append(Phoneme(p.symbol, p.start_s + t, p.end_s + t))
            gap = np.zeros(int(rng.uniform(0.15, 0.6) * 16000), np.float32)
            parts += [audio.samples, gap]
            t += audio.duration_s + len(gap) / 16000
        samples, text = np.concatenate(parts), " ".join(job["texts"])
    tel = cfg.p_telephone if job["source"] == "espeak" else 0.0
    clip = trim_clip(make_clip(samples, phonemes, rng, cfg, load_rig(), cfg.p_augment, tel), cfg.max_frames, cfg.fps)
    clip.update({k: job[k] for k in ("id", "source", "split", "lang") if k in job})
    clip["voice"] = (f"{job['voice']}+{job['variant']}" if "variant" in job
                     else f"asterisk-{ASTERISK_DIRS[job['lang']]}")
    clip["text"] = text
    return clip


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _job_worker(args):
    job, cfg = args
    try:
        return _run_job(job, cfg), None
    except Exception as e:  # one bad clip (odd text, failed alignment) must not sink the build
        return None, f"{job['id']}: {type(e).__name__}: {e}"


ASTERISK_LANG_SEED = {"en": 0, "fr": 101, "es": 202, "ru": 303}


def build_corpus(cfg: CorpusConfig, out_dir, progress: bool = True, log=print, workers: int = 2) -> Corpus:
    """Synthesise, align, augment and cache the corpus in `out_dir`; deterministic for a config."""
    import multiprocessing as mp

    jobs = _espeak_jobs(cfg)
    for lang in cfg.asterisk_languages:
        # English keeps its original seed and ids, so its clips are those of the v1 corpus.
        prng = np.random.default_rng(cfg.seed + 1 + ASTERISK_LANG_SEED.get(lang, 0))
        prompts = asterisk_training_prompts(lang)
        limit = cfg.asterisk_prompts if lang == "en" else cfg.asterisk_prompts_other
        order = prng.permutation(len(prompts))[:limit]
        prefix = "asterisk" if lang == "en" else f"asterisk-{lang}"
        for k in range(0, len(order), cfg.asterisk_per_clip):
            group = [prompts[i] for i in order[k:k + cfg.asterisk_per_clip]]
            jobs.append({"id": f"{prefix}-{k // cfg.asterisk_per_clip:04d}", "source": "asterisk", "split": "train",
                         "lang": lang, "texts": [g[0] for g in group], "wavs": [str(g[1]) for g in group],
                         "seed": int(prng.integers(2 ** 31))})
    results: list = [None] * len(jobs)
    errors = []
    from rich.progress import Progress

    args = [(j, cfg) for j in jobs]
    with Progress(disable=not progress) as bar:
        task = bar.add_task("corpus", total=len(jobs))
        if workers > 1:  # fork: workers inherit the loaded modules; espeak re-initialises per pid
            with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
                outs = pool.imap(_job_worker, args, chunksize=2)
                for i, (clip, err) in enumerate(outs):
                    results[i] = clip
                    errors += [err] if err else []
                    bar.update(task, advance=1)
        else:
            for i, a in enumerate(args):
                results[i], err = _job_worker(a)
                errors += [err] if err else []
                bar.update(task, advance=1)
    clips = [c for c in results if c is not None]
    if not clips:
        raise InputError(f"corpus build produced no clips; first error: {errors[0] if errors else 'none'}")
    lengths = np.array([len(c["mel"]) for c in clips], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    cat = lambda k: np.concatenate([c[k] for c in clips]).astype(np.float16)
    meta = {"version": CORPUS_VERSION, "config": asdict(cfg), "fps": cfg.fps, "errors": errors[:50],
            "n_errors": len(errors)}
    info = [{k: c[k] for k in ("id", "source", "split", "lang", "voice", "text", "augment", "emotion")} for c in clips]
    for c, d in zip(clips, info):
        if c["split"] != "train":
            d["phonemes"] = c["phonemes"]
    corpus = Corpus(cat("mel"), cat("target"), cat("offset"), cat("keypoints"),
                    np.concatenate([c["viseme"] for c in clips]).astype(np.uint8),
                    np.stack([c["style"] for c in clips]).astype(np.float32), starts, lengths,
                    np.array([SPLITS.index(c["split"]) for c in clips], np.int8), info, meta)
    meta.update(summary(corpus))
    save_corpus(corpus, out_dir)
    log(f"corpus: {len(clips)} clips, {corpus.duration_s / 60:.1f} min, {len(errors)} skipped -> {out_dir}")
    return corpus


def replay_config(base: dict, clips: int) -> CorpusConfig:
    """A small espeak-only slice of a model's corpus config (its card's `config.corpus`): the same seed,
    languages, voices, rates and augmentation, so the clips are that corpus's first `clips` espeak
    training clips, ones the base model trained on. No held-out clips and no real prompts (those need
    the Debian speech packages and pocketsphinx): the replay mix of a fine-tune (captures.py)."""
    names = {f.name for f in fields(CorpusConfig)}
    known = {k: tuple(v) if isinstance(v, list) else v for k, v in base.items() if k in names}
    return replace(CorpusConfig(**known), espeak_clips=int(clips), val_voice_clips=0, val_lang_clips=0,
                   asterisk_prompts=0, asterisk_prompts_other=0, asterisk_languages=())


def summary(corpus: Corpus) -> dict:
    """Sizes per split, source and language (for the model card)."""
    fps = float(corpus.meta.get("fps", 30.0))
    out: dict = {}
    for key in ("split", "source", "lang"):
        d: dict = {}
        for c, n in zip(corpus.clips, corpus.lengths):
            e = d.setdefault(c[key], {"clips": 0, "minutes": 0.0})
            e["clips"] += 1
            e["minutes"] = round(e["minutes"] + n / fps / 60, 2)
        out[f"by_{key}"] = d
    out["voices"] = sorted({c["voice"] for c in corpus.clips})
    return out

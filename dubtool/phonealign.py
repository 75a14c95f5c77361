"""Phone timings for a real recording of a known transcript.

Two methods:
- "dtw" (any language espeak speaks): synthesize the transcript with espeak-ng, compute MFCCs of both
  signals at 100 frames/s with cepstral mean/variance normalisation, restrict both to their speech
  region, align them by dynamic time warping (librosa.sequence.dtw) and carry espeak's exact phone
  boundaries through the warping path.
- "pocketsphinx": forced alignment with pocketsphinx 5's bundled en-us acoustic model (word pass,
  then phone pass via set_alignment/get_alignment). English words come from the CMU dictionary
  (ARPAbet -> IPA); other languages (and English words the dictionary lacks) from espeak-ng's IPA,
  each phone mapped to its nearest en-us phone (`align_pocketsphinx_ipa`). Cross-language, an
  English acoustic model still finds phone edges: on French /p/ the aligned span holds the stop's
  silent closure 97 % of the time (DTW: 49 %), see docs/eval.md.
"auto" uses pocketsphinx when it is installed and the alignment succeeds, else DTW.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, Audio
from .errors import DependencyError, InputError, SilenceError
from .phonemes import Phoneme, Word, is_silence

FRAME_RATE = 100  # MFCC frames per second for DTW
MAX_DTW_CELLS = 6e7  # frames(synth) x frames(real) above this: coarser frames keep memory bounded


@dataclass(frozen=True)
class Alignment:
    """Phones (IPA, with pauses as '_') and words of the transcript, in the recording's time."""

    phonemes: list[Phoneme]
    words: list[Word]
    method: str


def align_phonemes(audio: Audio, text: str, lang: str, method: str = "auto") -> list[Phoneme]:
    """IPA phones of `text` timed against `audio` (see `align`)."""
    return align(audio, text, lang, method).phonemes


def align_words(audio: Audio, text: str, lang: str, method: str = "auto") -> list[Word]:
    """Words of `text` (`.text`, `.start_s`, `.end_s`) timed against `audio` (see `align`)."""
    return align(audio, text, lang, method).words


def align(audio: Audio, text: str, lang: str, method: str = "auto") -> Alignment:
    """Align the transcript `text` (language `lang`, a --lang code) to the recording `audio`.
    `method`: 'auto', 'dtw' or 'pocketsphinx' (see the module docstring)."""
    from .lang import language

    if method not in ("auto", "dtw", "pocketsphinx"):
        raise InputError(f"unknown alignment method {method!r}; use auto, dtw or pocketsphinx")
    if not isinstance(text, str) or not _words(text):
        raise InputError("the transcript is empty: give the words spoken in the recording")
    code = language(lang).code
    audio = _to_16k(audio)
    _require_speech(audio)
    english = code.startswith("en")
    if method in ("pocketsphinx", "auto"):
        try:
            return align_pocketsphinx(audio, text) if english else align_pocketsphinx_ipa(audio, text, code)
        except (DependencyError, InputError, _OutOfVocabulary) as e:
            if english:  # words outside the CMU dictionary: espeak's pronunciations
                try:
                    return align_pocketsphinx_ipa(audio, text, code)
                except (DependencyError, InputError):
                    pass
            if method == "pocketsphinx":
                raise InputError(str(e)) if isinstance(e, _OutOfVocabulary) else e
    return align_dtw(audio, text, code)


# ------------------------------------------------------------------------------------------- DTW

def _to_16k(audio: Audio) -> Audio:
    if audio.sample_rate == SAMPLE_RATE:
        return audio
    import librosa

    return Audio(librosa.resample(np.asarray(audio.samples, np.float32), orig_sr=audio.sample_rate,
                                  target_sr=SAMPLE_RATE).astype(np.float32), SAMPLE_RATE)


def _require_speech(audio: Audio) -> None:
    if audio.samples.size < SAMPLE_RATE // 10:
        raise InputError(f"the recording is too short to align ({audio.duration_s:.2f} s)")
    peak = float(np.max(np.abs(audio.samples)))
    if peak < 10 ** (-50 / 20):
        raise SilenceError("the recording holds no speech to align the transcript to")


def _frame_db(samples: np.ndarray, hop: int) -> np.ndarray:
    import librosa

    rms = librosa.feature.rms(y=samples, frame_length=2 * hop, hop_length=hop, center=True)[0]
    return 20 * np.log10(rms + 1e-8)


def _speech_region(samples: np.ndarray, hop: int, floor_db: float = 35.0) -> tuple[int, int]:
    """First and last frame within `floor_db` of the loud frames (the 95th percentile)."""
    db = _frame_db(samples, hop)
    on = np.nonzero(db > np.percentile(db, 95) - floor_db)[0]
    if on.size == 0:
        return 0, len(db)
    return max(int(on[0]) - 2, 0), min(int(on[-1]) + 3, len(db))


def _mfcc(samples: np.ndarray, hop: int) -> np.ndarray:
    """(frames, 26) CMVN-normalised MFCC 1..13 plus deltas (c0 dropped: loudness differs)."""
    import librosa

    m = librosa.feature.mfcc(y=samples, sr=SAMPLE_RATE, n_mfcc=14, n_fft=512, hop_length=hop, win_length=400,
                             n_mels=40, fmin=60, fmax=7000)[1:]
    d = librosa.feature.delta(m, width=5) if m.shape[1] >= 5 else np.zeros_like(m)
    f = np.vstack([m, d]).T
    return (f - f.mean(0)) / (f.std(0) + 1e-6)


def align_dtw(audio: Audio, text: str, lang: str = "en") -> Alignment:
    """DTW between the recording and espeak's reading of `text` (any supported language)."""
    import librosa

    from .espeak import synthesize
    from .lang import voice_for

    syn = synthesize(text, voice=voice_for(lang))
    x_syn, x_real = syn.audio.samples, audio.samples
    hop = SAMPLE_RATE // FRAME_RATE
    while (len(x_syn) / hop) * (len(x_real) / hop) > MAX_DTW_CELLS:
        hop *= 2
    fps = SAMPLE_RATE / hop
    s0, s1 = _speech_region(x_syn, hop)
    r0, r1 = _speech_region(x_real, hop)
    fs = _mfcc(x_syn, hop)[s0:s1]
    fr = _mfcc(x_real, hop)[r0:r1]
    if len(fs) < 2 or len(fr) < 2:
        raise SilenceError("the recording holds too little speech to align the transcript to")
    _, wp = librosa.sequence.dtw(X=fs.T, Y=fr.T, metric="euclidean", subseq=False, backtrack=True)
    wp = wp[::-1]
    # For each synthesized frame, the mean real frame it was matched to: a monotone map.
    sums = np.zeros(len(fs))
    cnts = np.zeros(len(fs))
    np.add.at(sums, wp[:, 0], wp[:, 1])
    np.add.at(cnts, wp[:, 0], 1)
    real_of_syn = np.maximum.accumulate(sums / np.maximum(cnts, 1))
    syn_t = (np.arange(len(fs)) + s0) / fps
    real_t = (real_of_syn + r0) / fps

    def warp(ts: np.ndarray) -> np.ndarray:
        ts = np.asarray(ts, np.float64)
        out = np.interp(ts, syn_t, real_t)
        # outside the speech region: keep the offset to the region edge
        out = np.where(ts < syn_t[0], real_t[0] - (syn_t[0] - ts), out)
        out = np.where(ts > syn_t[-1], real_t[-1] + (ts - syn_t[-1]), out)
        return np.clip(out, 0.0, audio.duration_s)

    syn_phones = with_stop_closures(syn.phonemes, x_syn)
    starts = warp([p.start_s for p in syn_phones])
    ends = warp([p.end_s for p in syn_phones])
    phones = _tidy([("_" if is_silence(p.symbol) else p.symbol, a, b)
                    for p, a, b in zip(syn_phones, starts, ends)], audio.duration_s)
    words = []
    for w in syn.words:
        # the word's first sound; a stop's closure (moved into it above) counts
        k = next((i for i, p in enumerate(syn.phonemes) if p.start_s >= w.start_s - 1e-6
                  and not is_silence(p.symbol)), None)
        first = syn_phones[k] if k is not None else None
        a = float(warp([first.start_s if first else w.start_s])[0])
        b = float(warp([w.end_s])[0])
        words.append(Word(w.text, a, max(a, b)))
    return Alignment(phones, words, "dtw")


_STOPS = set("pbtdkgɡcɟqʔ")


def with_stop_closures(phonemes: list[Phoneme], samples: np.ndarray, max_closure_s: float = 0.12,
                       after_pause_s: float = 0.06) -> list[Phoneme]:
    """espeak labels a stop from its release; the silent closure before it sits in the previous phone
    (or pause). Move each stop's start back over that silence, as forced aligners (and lip closure)
    count it: at most `max_closure_s`, `after_pause_s` after a pause where the closure is unseen."""
    from .phonemes import normalize

    hop = SAMPLE_RATE // 200
    db = _frame_db(samples, hop)
    quiet = db < np.percentile(db, 95) - 35.0
    out = list(phonemes)
    for k in range(1, len(out)):
        p, prev = out[k], out[k - 1]
        if normalize(p.symbol)[:1] not in _STOPS:
            continue
        limit = after_pause_s if is_silence(prev.symbol) else max_closure_s
        i = int(round(p.start_s * 200)) - 1
        j = i
        while j >= 0 and quiet[min(j, len(quiet) - 1)] and (i - j + 1) / 200 <= limit:
            j -= 1
        new_start = max((j + 1) / 200, p.start_s - limit, prev.start_s + 0.01)
        if is_silence(prev.symbol) and i - j <= 1:
            new_start = max(p.start_s - after_pause_s, prev.start_s + 0.01)
        if new_start < p.start_s:
            out[k - 1] = Phoneme(prev.symbol, prev.start_s, new_start)
            out[k] = Phoneme(p.symbol, new_start, p.end_s)
    return out


def _tidy(spans, duration_s: float) -> list[Phoneme]:
    """Monotone, non-overlapping phones; zero-length ones dropped; silence fills the ends."""
    out: list[Phoneme] = []
    t = 0.0
    for sym, a, b in spans:
        a = max(float(a), t)
        b = min(max(float(b), a), duration_s)
        if b - a < 1e-4:
            continue
        out.append(Phoneme(sym, a, b))
        t = b
    return out


# ---------------------------------------------------------------------------------- pocketsphinx

class _OutOfVocabulary(Exception):
    pass


# CMU ARPAbet -> IPA (General American).
ARPABET_IPA = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "EH": "ɛ", "ER": "ɝ", "EY": "eɪ",
    "IH": "ɪ", "IY": "i", "OW": "oʊ", "OY": "ɔɪ", "UH": "ʊ", "UW": "u", "B": "b", "CH": "tʃ", "D": "d",
    "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "dʒ", "K": "k", "L": "l", "M": "m", "N": "n", "NG": "ŋ",
    "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t", "TH": "θ", "V": "v", "W": "w", "Y": "j", "Z": "z",
    "ZH": "ʒ", "SIL": "_",
}


_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _words(text: str) -> list[str]:
    """Lower-case words of a transcript; lone digits spelled out (pocketsphinx's dictionary has no digits)."""
    t = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    words = re.findall(r"[^\W_]+(?:'[^\W_]+)*", t)
    return [_DIGITS[int(w)] if len(w) == 1 and w.isdigit() else w for w in words]


def _decoder():
    try:
        from pocketsphinx import Decoder, set_loglevel
    except ImportError:
        raise DependencyError("pocketsphinx is not installed (pip install 'pocketsphinx>=5'); "
                              "use method dtw instead") from None
    set_loglevel("FATAL")
    return Decoder(samprate=SAMPLE_RATE, bestpath=False, loglevel="FATAL")


def _decode_alignment(d, align_text: str, x: np.ndarray, whole: bool = False):
    """Two-pass forced alignment (words, then phones) of `align_text` to the 16 kHz samples `x` with
    decoder `d`: (alignment, offset_s of the decoded part). pocketsphinx's alignment grammar puts no
    silence before the first word, so unless `whole` the recording is trimmed to its speech region
    (plus a margin) and `offset_s` shifts the times back."""
    a0, a1 = 0, len(x)
    if not whole:
        hop = SAMPLE_RATE // FRAME_RATE
        r0, r1 = _speech_region(x, hop)
        a0, a1 = max(r0 * hop - SAMPLE_RATE // 50, 0), min(r1 * hop + SAMPLE_RATE // 20, len(x))
    pcm = (np.clip(x[a0:a1], -1, 1) * 32767).astype(np.int16).tobytes()
    try:
        d.set_align_text(align_text)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        if d.hyp() is None:
            raise InputError("pocketsphinx could not align the transcript to the recording (does it match?)")
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        return d.get_alignment(), a0 / SAMPLE_RATE
    except RuntimeError as e:
        raise InputError(f"pocketsphinx alignment failed ({e})") from None


def _pocketsphinx_result(phones: list, words: list[Word], offset: float, duration_s: float, method: str) -> Alignment:
    """The Alignment of decoded (symbol, start_s, end_s) phones; the trimmed lead-in is a pause."""
    if not phones:
        raise InputError("pocketsphinx could not align the transcript to the recording")
    if offset > 0:
        phones.insert(0, ("_", 0.0, offset))
    return Alignment(_tidy(phones, duration_s), words, method)


_DECODER = None


def align_pocketsphinx(audio: Audio, text: str) -> Alignment:
    """English forced alignment with pocketsphinx (bundled en-us model); raises for words that are
    not in its dictionary."""
    global _DECODER
    if _DECODER is None:
        _DECODER = _decoder()
    d = _DECODER
    words = _words(text)
    oov = [w for w in words if d.lookup_word(w) is None]
    if oov:
        raise _OutOfVocabulary(f"pocketsphinx does not know the word(s) {', '.join(sorted(set(oov)))}")
    al, offset = _decode_alignment(d, " ".join(words), _to_16k(audio).samples)
    frame = 0.01
    phones, out_words = [], []
    for w in al:
        name = re.sub(r"\(\d+\)$", "", w.name)
        for p in w:
            phones.append((ARPABET_IPA.get(p.name, p.name.lower()), offset + p.start * frame,
                           offset + (p.start + p.duration) * frame))
        if name not in ("<s>", "</s>", "<sil>") and not name.startswith("[") and not name.startswith("+"):
            sub = [p for p in w if p.name != "SIL"]
            start = (sub[0].start if sub else w.start) * frame
            out_words.append(Word(name, offset + start, offset + (w.start + w.duration) * frame))
    return _pocketsphinx_result(phones, out_words, offset, audio.duration_s, "pocketsphinx")


# ------------------------------------------------------------- pocketsphinx for other languages

# IPA base letter -> the nearest phone of the en-us acoustic model. Cross-language forced alignment
# with an English model places boundaries far better than DTW against espeak's voice (English
# /p b m/ centres: DTW is >40 ms off on 27 % of them, docs/eval.md); the phones only need to be
# close enough for the model to find each one's edges. Bilabials map to themselves.
_IPA_ARPABET = {
    "p": "P", "b": "B", "m": "M", "ɸ": "F", "β": "B", "f": "F", "v": "V", "ʋ": "V", "ɱ": "M",
    "θ": "TH", "ð": "DH", "t": "T", "d": "D", "n": "N", "s": "S", "z": "Z", "l": "L", "ɾ": "D", "r": "R",
    "ɹ": "R", "ɬ": "L", "ɮ": "L", "ʃ": "SH", "ʒ": "ZH", "ɕ": "SH", "ʑ": "ZH", "ʂ": "SH", "ʐ": "ZH", "ɻ": "R",
    "k": "K", "ɡ": "G", "ŋ": "NG", "x": "HH", "ɣ": "G", "q": "K", "ɢ": "G", "χ": "HH", "ʁ": "R", "ɴ": "NG",
    "h": "HH", "ɦ": "HH", "ʔ": "T", "ħ": "HH", "ʕ": "HH", "j": "Y", "ç": "HH", "ʝ": "Y", "ɲ": "N", "ʎ": "L",
    "c": "K", "ɟ": "G", "w": "W", "ɥ": "W", "ʍ": "W", "i": "IY", "ɪ": "IH", "e": "EY", "ɛ": "EH", "æ": "AE",
    "a": "AA", "ɑ": "AA", "ɐ": "AH", "ɒ": "AA", "ɔ": "AO", "o": "OW", "ʊ": "UH", "u": "UW", "y": "UW",
    "ʏ": "UH", "ø": "ER", "œ": "ER", "ɶ": "AE", "ə": "AH", "ɜ": "ER", "ɘ": "AH", "ɤ": "AH", "ʌ": "AH",
    "ɚ": "ER", "ɝ": "ER", "ɨ": "IH", "ʉ": "UW", "ɯ": "UW", "ɵ": "ER", "ɞ": "ER",
}
_AFFRICATES = {"tʃ": "CH", "dʒ": "JH", "ts": "T", "dz": "D", "tɕ": "CH", "dʑ": "JH", "tʂ": "CH", "dʐ": "JH"}


def ipa_to_arpabet(symbol: str) -> str | None:
    """The en-us acoustic model's phone for one espeak IPA phone (None: a pause or an unknown sound)."""
    from .phonemes import _base

    if is_silence(symbol):
        return None
    b = _base(symbol)
    if b[:2] in _AFFRICATES:
        return _AFFRICATES[b[:2]]
    for ch in b:
        if ch in _IPA_ARPABET:
            return _IPA_ARPABET[ch]
    return None


_XDECODER = None


def align_pocketsphinx_ipa(audio: Audio, text: str, lang: str) -> Alignment:
    """Forced alignment for any language espeak reads: espeak-ng gives each word's phones (IPA),
    each is mapped to its nearest en-us phone (`ipa_to_arpabet`), pocketsphinx aligns those
    pronunciations to the recording, and the phones keep their IPA symbols. Words are espeak's."""
    global _XDECODER
    from .espeak import synthesize
    from .lang import voice_for

    syn = synthesize(text, voice=voice_for(lang))
    groups: list[list[str]] = []
    starts = [w.start_s for w in syn.words]
    for p in syn.phonemes:
        if ipa_to_arpabet(p.symbol) is None:
            continue
        k = max(0, int(np.searchsorted(starts, p.start_s + 1e-6)) - 1) if starts else 0
        while len(groups) <= k:
            groups.append([])
        groups[k].append(p.symbol)
    # (espeak word index, dictionary name, ARPAbet pronunciation, IPA phones). Entries are named after
    # their pronunciation, so repeated words (and later lines) reuse them.
    pron = []
    for k, g in enumerate(groups):
        if g:
            arpa = " ".join(ipa_to_arpabet(s) for s in g)
            pron.append((k, "x_" + arpa.replace(" ", "_").lower(), arpa, g))
    if not pron:
        raise InputError("the transcript has no sounds to align")
    x = _to_16k(audio).samples
    al, err = None, None
    # A failed search can leave the decoder unable to align the next line: retry once with a fresh
    # decoder and the whole recording.
    for fresh in (False, True):
        if _XDECODER is None or fresh:
            _XDECODER = _decoder()
        d = _XDECODER
        for _, name, arpa, _ in pron:
            if d.lookup_word(name) is None:
                d.add_word(name, arpa, True)
        try:
            al, offset = _decode_alignment(d, " ".join(name for _, name, _, _ in pron), x, whole=fresh)
            break
        except InputError as e:
            err = e
    if al is None:
        raise err
    frame = 0.01
    phones, out_words = [], []
    queue = list(pron)  # the aligned words come in transcript order
    for w in al:
        name = re.sub(r"\(\d+\)$", "", w.name)
        sub = [p for p in w if p.name != "SIL"]
        mine = queue and queue[0][1] == name
        k, _, _, g = queue.pop(0) if mine else (None, None, None, [])
        symbols = iter(g)
        for p in w:
            sym = "_" if p.name == "SIL" else next(symbols, ARPABET_IPA.get(p.name, p.name.lower()))
            phones.append((sym, offset + p.start * frame, offset + (p.start + p.duration) * frame))
        if mine:
            start = (sub[0].start if sub else w.start) * frame
            out_words.append(Word(syn.words[k].text if k < len(syn.words) else name, offset + start,
                                  offset + (w.start + w.duration) * frame))
    return _pocketsphinx_result(phones, out_words, offset, audio.duration_s, "pocketsphinx-ipa")

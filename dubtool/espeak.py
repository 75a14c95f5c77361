"""Speech synthesis with exact phoneme timings: libespeak-ng through ctypes.

espeak-ng runs in AUDIO_OUTPUT_SYNCHRONOUS mode with phoneme events reported as IPA. Its synth
callback hands over blocks of 16-bit samples plus events; a PHONEME event carries the IPA name in
`id.string` and the output sample index where the phone starts in `sample`, WORD events the
character span of the word. Struct layout and constants follow speak_lib.h (espeak-ng 1.51).

The engine is process-global, not thread-safe and keeps the voice between calls, so every call takes
a lock; a forked/spawned worker re-initialises it (the pid is checked), which makes the module safe
for multiprocessing corpus builders.

Repeatability: espeak's pitch "flutter" runs off a function-static index that is never reset, so
with default voices the same text comes out with ~1 % different timings on each call; the glottal
wave phase also carries over from the previous text. Variants with `flutter 0` (e.g. 'michel',
'Andy', 'Lee') give bit-identical output when the same call is repeated.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, Audio
from .errors import DependencyError, InputError
from .phonemes import Phoneme, Word

# speak_lib.h constants
AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakINITIALIZE_PHONEME_EVENTS = 0x0001
espeakINITIALIZE_PHONEME_IPA = 0x0002
espeakINITIALIZE_DONT_EXIT = 0x8000
espeakCHARS_UTF8 = 1
POS_CHARACTER = 1
espeakRATE, espeakVOLUME, espeakPITCH, espeakRANGE = 1, 2, 3, 4
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_SENTENCE, EVENT_END = 0, 1, 2, 5
EVENT_MSG_TERMINATED, EVENT_PHONEME = 6, 7
EE_OK = 0

MAX_TEXT_CHARS = 20_000


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)* NUL
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Synthesis:
    """espeak output resampled to 16 kHz, with its phone and word timings (seconds)."""

    audio: Audio
    phonemes: list[Phoneme]
    words: list[Word]


class _Engine:
    def __init__(self) -> None:
        self.lib = None
        self.pid = None
        self.sample_rate = 22050
        self.voice = None
        self.voices: dict[str, str] | None = None
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int, bytes]] = []
        self._callback = _CALLBACK(self._on_synth)  # kept alive as long as the engine

    def _on_synth(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            e = events[i]
            payload = bytes(e.id.string) if e.type == EVENT_PHONEME else b""
            self._events.append((e.type, e.text_position, e.length, e.sample, payload))
            if e.type == EVENT_MSG_TERMINATED:
                break
            i += 1
        return 0

    def ensure(self) -> None:
        if self.lib is not None and self.pid == os.getpid():
            return
        lib = _load_library()
        opts = espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_PHONEME_IPA | espeakINITIALIZE_DONT_EXIT
        sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 200, None, opts)
        if sr <= 0:
            raise DependencyError("libespeak-ng failed to initialise (is espeak-ng-data installed? "
                                  "Debian/Ubuntu: apt-get install espeak-ng)")
        lib.espeak_SetSynthCallback(self._callback)
        self.lib, self.pid, self.sample_rate, self.voice, self.voices = lib, os.getpid(), int(sr), None, None


def _load_library():
    names = ["libespeak-ng.so.1", ctypes.util.find_library("espeak-ng"), "libespeak-ng.so"]
    lib = None
    for n in names:
        if not n:
            continue
        try:
            lib = ctypes.CDLL(n)
            break
        except OSError:
            continue
    if lib is None:
        raise DependencyError("libespeak-ng not found; install it (Debian/Ubuntu: apt-get install libespeak-ng1 espeak-ng)")
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    return lib


_ENGINE = _Engine()
_LOCK = threading.Lock()


def _voice_table() -> dict[str, str]:
    """Language code (lower case) -> voice file identifier of its preferred espeak voice (mbrola
    voices skipped: they need separately installed diphone data). Call with the lock held."""
    if _ENGINE.voices is not None:
        return _ENGINE.voices
    arr = _ENGINE.lib.espeak_ListVoices(None)
    best: dict[str, tuple[int, str]] = {}
    names: dict[str, str] = {}
    i = 0
    while arr[i]:
        v = arr[i].contents
        ident = (v.identifier or b"").decode("utf-8", "replace")
        names[ident] = (v.name or b"").decode("utf-8", "replace").replace("_", " ")
        raw = v.languages
        i += 1
        if not raw or ident.startswith("mb/"):
            continue
        # languages = (priority byte, name, NUL)* then an extra NUL
        k = 0
        while True:
            prio = ctypes.c_ubyte.from_address(raw + k).value
            if prio == 0:
                break
            name = ctypes.string_at(raw + k + 1).decode("utf-8", "replace")
            k += 2 + len(name.encode("utf-8"))
            key = name.lower()
            if key and (key not in best or prio < best[key][0]):
                best[key] = (prio, ident)
    _ENGINE.voices = {k: v for k, (_, v) in best.items()}
    _VOICE_NAMES.update({k: names.get(v, k) for k, v in _ENGINE.voices.items()})
    return _ENGINE.voices


_VOICE_NAMES: dict[str, str] = {}


def voice_names() -> dict[str, str]:
    """Language code espeak has a voice for -> that voice's display name ('cs' -> 'Czech')."""
    with _LOCK:
        _ENGINE.ensure()
        _voice_table()
        return dict(_VOICE_NAMES)


def list_voices() -> list[str]:
    """Language codes espeak has a voice for ('en-us', 'fr-fr', 'cmn', ...), sorted; each is a valid
    `voice` for `synthesize` (as are espeak's voice file names such as 'roa/fr')."""
    with _LOCK:
        _ENGINE.ensure()
        return sorted(_voice_table())


def _set_voice(name: str) -> None:
    # Set on every call, even when unchanged: reloading the voice resets espeak's per-voice state
    # (speed tables, intonation), which otherwise leaks from one text into the next.
    lib = _ENGINE.lib
    rc = lib.espeak_SetVoiceByName(name.encode("utf-8"))
    if rc != EE_OK:
        # espeak_SetVoiceByName matches voice names/files ('fr', 'roa/fr'); language codes such as
        # 'fr-fr' resolve through the voice list, keeping a '+variant' suffix.
        base, _, variant = name.partition("+")
        ident = _voice_table().get(base.lower())
        if ident:
            rc = lib.espeak_SetVoiceByName((ident + ("+" + variant if variant else "")).encode("utf-8"))
    if rc != EE_OK:
        _ENGINE.voice = None
        raise InputError(f"espeak has no voice {name!r}; see `espeak-ng --voices` (e.g. en-us, fr-fr, es, de)")
    _ENGINE.voice = name


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 175, pitch: int = 50, pitch_range: int = 50,
               variant: str | None = None) -> Synthesis:
    """Speak `text` with espeak-ng; return 16 kHz audio, IPA phones and words with their times.

    `voice` is an espeak voice name (lang.voice_for maps --lang codes), `variant` a voice variant
    such as 'm3' or 'f2' (appended as voice+variant), `rate_wpm` 80..450, `pitch`/`pitch_range` 0..100.
    Phone boundaries are the sample indices espeak reports, so they match the audio exactly."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("nothing to synthesize: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"text too long to synthesize ({len(text)} characters, at most {MAX_TEXT_CHARS})")
    if not 80 <= rate_wpm <= 450:
        raise InputError(f"speech rate must be 80..450 words per minute, got {rate_wpm}")
    if not (0 <= pitch <= 100 and 0 <= pitch_range <= 100):
        raise InputError(f"pitch and pitch range must be 0..100, got {pitch} and {pitch_range}")
    name = voice if not variant else f"{voice}+{variant}"
    data = text.encode("utf-8") + b"\0"
    with _LOCK:
        _ENGINE.ensure()
        lib = _ENGINE.lib
        _set_voice(name)
        for param, value in ((espeakRATE, rate_wpm), (espeakPITCH, pitch), (espeakRANGE, pitch_range),
                             (espeakVOLUME, 100)):
            lib.espeak_SetParameter(param, int(value), 0)
        _ENGINE._chunks, _ENGINE._events = [], []
        buf = ctypes.create_string_buffer(data)
        rc = lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, espeakCHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        chunks, events, sr = _ENGINE._chunks, _ENGINE._events, _ENGINE.sample_rate
        _ENGINE._chunks, _ENGINE._events = [], []
    if rc != EE_OK:
        raise InputError(f"espeak failed to synthesize the text (error {rc})")
    raw = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
    n_raw = len(raw)
    if n_raw == 0:
        raise InputError("espeak produced no audio for the text (only punctuation?)")
    phonemes = _phonemes_from_events(events, sr, n_raw)
    words = _words_from_events(events, text, sr, n_raw, phonemes)
    return Synthesis(_resample(raw, sr), phonemes, words)


def _resample(raw: np.ndarray, sr: int) -> Audio:
    if sr == SAMPLE_RATE:
        return Audio(raw, sr)
    from scipy.signal import resample_poly

    g = np.gcd(sr, SAMPLE_RATE)
    out = resample_poly(raw, SAMPLE_RATE // g, sr // g).astype(np.float32)
    return Audio(np.clip(out, -1.0, 1.0), SAMPLE_RATE)


def _phonemes_from_events(events, sr: int, n_raw: int) -> list[Phoneme]:
    marks = []  # (sample, ipa) for each phone start; '' marks the end of a clause (END event)
    for etype, _pos, _len, sample, payload in events:
        if etype == EVENT_PHONEME:
            ipa = payload.split(b"\0", 1)[0].decode("utf-8", "replace")
            if ipa.startswith("("):  # language switch marker such as '(en)': not a sound
                continue
            marks.append((sample, ipa))
        elif etype in (EVENT_END, EVENT_MSG_TERMINATED):
            marks.append((sample, None))
    out: list[Phoneme] = []
    for k, (sample, ipa) in enumerate(marks):
        if ipa is None:
            continue
        end = n_raw
        for s2, _ in marks[k + 1:]:
            if s2 >= sample:
                end = s2
                break
        end = min(end, n_raw)
        start = min(max(sample, 0), n_raw)
        if end <= start:
            continue
        # Same start as the previous phone (zero-length marker): keep the later one.
        if out and abs(out[-1].start_s - start / sr) < 1e-9:
            out.pop()
        out.append(Phoneme(ipa, start / sr, end / sr))
    return out


def _words_from_events(events, text: str, sr: int, n_raw: int, phonemes: list[Phoneme]) -> list[Word]:
    starts = [(pos, length, sample) for etype, pos, length, sample, _ in events if etype == EVENT_WORD]
    ends = sorted(sample for etype, _, _, sample, _ in events if etype in (EVENT_END, EVENT_MSG_TERMINATED))
    words = []
    for k, (pos, length, sample) in enumerate(starts):
        start_s = sample / sr
        nxt = starts[k + 1][2] if k + 1 < len(starts) else n_raw
        clause_end = next((e for e in ends if e > sample), n_raw)
        end_sample = min(nxt, clause_end, n_raw)
        end_s = end_sample / sr
        # trim trailing pause phones that espeak counts into the word span
        for p in phonemes:
            if start_s <= p.start_s < end_s and p.symbol.startswith("_") and p.start_s > start_s:
                end_s = p.start_s
                break
        word = text[max(pos - 1, 0): max(pos - 1, 0) + length] if length > 0 else ""
        if not word.strip():  # espeak reports an empty "word" for some trailing punctuation
            continue
        words.append(Word(word, start_s, max(end_s, start_s)))
    return words

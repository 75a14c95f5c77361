"""Phonemes as IPA symbols with times, and the articulatory classes the teacher and the metrics need.

espeak-ng reports IPA with stress marks (ˈ ˌ), length (ː), tie bars (t͡ʃ) and diacritics; `normalize`
strips those so classification looks at the base sounds only. French nasal vowels keep their
identity through `viseme_class` ("nasal_vowel") because their lip shape differs from the oral ones.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    """A word of a line and the time span it is spoken in, in seconds."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Phoneme:
    """One phone: IPA `symbol`, start and end time in seconds."""

    symbol: str
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def centre_s(self) -> float:
        return 0.5 * (self.start_s + self.end_s)


# Marks dropped before classification: stress, length, syllabic/non-syllabic, tie bars, tone letters.
_STRIP = set("ˈˌːˑ'\u02de\u0361\u035c\u0329\u032f\u0306\u0325\u032a\u0339\u031c\u031d\u031e\u031f\u0320"
             "\u0330\u0324\u02b2\u02b7\u02e0\u02e4\u0348\u034d\u02bc\u1d5d-_|‖.˥˦˧˨˩¹²³⁴⁵0123456789")
_NASAL_TILDE = "\u0303"
_ASPIRATION = "ʰ"

_BILABIAL = set("pbmɸβʙ")
_LABIODENTAL = set("fvɱʋ")
_DENTAL = set("θð")
_ALVEOLAR = set("tdnszlɾɹrɬɮ")
_POSTALVEOLAR = set("ʃʒɕʑʂʐɻ")
_VELAR = set("kgŋxɣɡqɢχʁɴ")
_GLOTTAL = set("hɦʔħʕ")
_PALATAL = set("jçʝɲʎc")
_ROUNDED_VOWELS = set("uoyøɔʊœɒɶʏɵʉɞ")
_OPEN_VOWELS = set("aɑæɐɶɒ")
_CLOSE_FRONT = set("iɪeɛɨɯ")
_MID_VOWELS = set("əɜɘɤʌɚɝ")
_VOWELS = _ROUNDED_VOWELS | _OPEN_VOWELS | _CLOSE_FRONT | _MID_VOWELS | set("ɞɵ")
# Approximants with lip rounding (English w, French ɥ).
_ROUNDED_GLIDES = set("wɥʍ")


def normalize(symbol: str) -> str:
    """Base IPA letters of an espeak symbol: 'ˈaː' -> 'a', 't͡ʃ' -> 'tʃ', 'pʰ' -> 'p'; the nasal
    tilde is kept ('ɑ̃' stays 'ɑ̃') because it changes the viseme class."""
    s = unicodedata.normalize("NFD", symbol or "")
    out = []
    for ch in s:
        if ch in _STRIP or ch == _ASPIRATION:
            continue
        if ch == "g":
            ch = "ɡ"
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out)).strip()


def _base(symbol: str) -> str:
    """Letters only, nasal tilde dropped."""
    return unicodedata.normalize("NFD", normalize(symbol)).replace(_NASAL_TILDE, "")


def _first(symbol: str) -> str:
    b = _base(symbol)
    return b[0] if b else ""


def is_silence(symbol: str) -> bool:
    """espeak's pauses ('_', '_:', '_!' ...) and empty symbols."""
    s = (symbol or "").strip()
    return s == "" or s.startswith("_") or normalize(s) == ""


def is_nasal_vowel(symbol: str) -> bool:
    s = unicodedata.normalize("NFD", normalize(symbol))
    return _NASAL_TILDE in s and bool(set(s) & _VOWELS)


def is_vowel(symbol: str) -> bool:
    """True when the phone's first base letter is a vowel (diphthongs count by their onset)."""
    return _first(symbol) in _VOWELS


def is_bilabial(symbol: str) -> bool:
    """p b m (aspirated, long, syllabic variants too) and ɸ β: the lips must meet."""
    b = _base(symbol)
    return bool(b) and b[0] in _BILABIAL


def is_labiodental(symbol: str) -> bool:
    """f v (and ɱ ʋ): lower lip against upper teeth."""
    b = _base(symbol)
    return bool(b) and b[0] in _LABIODENTAL


def is_rounded_vowel(symbol: str) -> bool:
    """Vowels with lip rounding (u o y ø ɔ ʊ œ ...) and the rounded glides w ɥ; diphthongs count by
    their onset ('oʊ' yes, 'aʊ' no)."""
    f = _first(symbol)
    return f in _ROUNDED_VOWELS or f in _ROUNDED_GLIDES


def is_open_vowel(symbol: str) -> bool:
    """Open vowels (a ɑ æ ɐ ɒ): the jaw opens widest."""
    return _first(symbol) in _OPEN_VOWELS


# Viseme classes: lip/jaw shapes that look alike. 15 classes.
VISEME_CLASSES: tuple[str, ...] = (
    "silence",      # rest
    "bilabial",     # p b m: lips closed
    "labiodental",  # f v: lower lip under upper teeth
    "dental",       # θ ð: tongue between teeth
    "alveolar",     # t d n s z l r: jaw slightly open, teeth close
    "postalveolar", # ʃ ʒ tʃ dʒ: lips slightly protruded
    "velar",        # k g ŋ x: jaw moderately open
    "glottal",      # h ʔ: shape of the next vowel (neutral here)
    "palatal",      # j ɲ ç
    "rounded_glide",  # w ɥ
    "open_vowel",   # a ɑ æ
    "mid_vowel",    # ə ɜ ʌ ɛ
    "spread_vowel", # i ɪ e
    "rounded_vowel",  # u o y ø ɔ
    "nasal_vowel",  # ɑ̃ ɔ̃ ɛ̃ œ̃
)


def viseme_class(symbol: str) -> str:
    """The viseme class (one of VISEME_CLASSES) of an IPA symbol."""
    if is_silence(symbol):
        return "silence"
    if is_nasal_vowel(symbol):
        return "nasal_vowel"
    f = _first(symbol)
    if f in _BILABIAL:
        return "bilabial"
    if f in _LABIODENTAL:
        return "labiodental"
    if f in _DENTAL:
        return "dental"
    b = _base(symbol)
    if b.startswith(("tʃ", "dʒ", "ts", "dz")) and len(b) > 1 and b[1] in _POSTALVEOLAR:
        return "postalveolar"
    if f in _POSTALVEOLAR:
        return "postalveolar"
    if f in _ALVEOLAR:
        return "alveolar"
    if f in _VELAR:
        return "velar"
    if f in _GLOTTAL:
        return "glottal"
    if f in _PALATAL:
        return "palatal"
    if f in _ROUNDED_GLIDES:
        return "rounded_glide"
    if f in _OPEN_VOWELS:
        return "open_vowel"
    if f in _ROUNDED_VOWELS:
        return "rounded_vowel"
    if f in _CLOSE_FRONT:
        return "spread_vowel" if f in "iɪeɨɯ" else "mid_vowel"
    if f in _MID_VOWELS:
        return "mid_vowel"
    return "alveolar"  # unknown consonant: a neutral, slightly open mouth

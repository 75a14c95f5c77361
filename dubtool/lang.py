"""Languages dubtool speaks: `--lang` codes -> espeak-ng voice and display name.

Every language espeak-ng has a voice for is accepted, under its espeak code (`espeak-ng --voices`) or
the usual ISO 639 / BCP 47 spellings (cs, ces, cze; nl, nld, dut; pt-br, pt_BR), normalised by
`langcodes`. The curated table below holds the languages the model and teacher were built and tested
on, with notes; the rest come from the installed espeak-ng. A language espeak-ng does not speak is not
an error for the flow model (it needs audio only): `lookup` returns None and only transcript alignment
and the teacher, which need espeak's pronunciations, refuse it (`language` raises)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Language:
    code: str    # what users type after --lang
    voice: str   # espeak-ng voice name
    name: str    # display name
    note: str = ""


# Chinese uses espeak's pinyin voice: Debian's espeak-ng 1.51 'cmn' voice spells hanzi tone digits
# out in English. espeak's Japanese reads kana; kanji are spelled out as "Chinese letter".
LANGUAGES: dict[str, Language] = {l.code: l for l in (
    Language("en", "en-us", "English (US)"),
    Language("en-gb", "en-gb", "English (UK)"),
    Language("fr", "fr-fr", "French"),
    Language("es", "es", "Spanish (Spain)"),
    Language("es-419", "es-419", "Spanish (Latin America)"),
    Language("de", "de", "German"),
    Language("it", "it", "Italian"),
    Language("pt", "pt", "Portuguese (Portugal)"),
    Language("pt-br", "pt-br", "Portuguese (Brazil)"),
    Language("nl", "nl", "Dutch"),
    Language("pl", "pl", "Polish"),
    Language("ru", "ru", "Russian"),
    Language("ja", "ja", "Japanese", "write the transcript in kana"),
    Language("zh", "cmn-latn-pinyin", "Chinese (Mandarin)", "hanzi or pinyin with tone digits"),
    Language("ko", "ko", "Korean"),
)}
ALIASES = {"en-us": "en", "fr-fr": "fr", "cmn": "zh", "zh-cn": "zh", "pt-pt": "pt", "es-es": "es", "ja-jp": "ja",
           "de-de": "de", "it-it": "it", "eng": "en", "fra": "fr", "fre": "fr", "spa": "es", "deu": "de",
           "ger": "de", "ita": "it", "por": "pt", "jpn": "ja", "zho": "zh", "chi": "zh"}


def supported_codes() -> list[str]:
    """The curated codes (tested with the model and teacher); `espeak_codes()` lists the rest."""
    return list(LANGUAGES)


@functools.lru_cache(maxsize=1)
def _espeak_voices() -> dict[str, str]:
    """espeak-ng language code -> voice display name; empty when espeak-ng is not installed."""
    from .errors import DependencyError

    try:
        from .espeak import voice_names

        return voice_names()
    except (ImportError, DependencyError, OSError):
        return {}


def espeak_codes() -> list[str]:
    return sorted(_espeak_voices())


def _normalise(code: str) -> str:
    key = (code or "").strip().lower().replace("_", "-")
    try:
        import langcodes

        key = langcodes.standardize_tag(key).lower()  # ces/cze -> cs, dut -> nl, iw -> he
    except (ImportError, ValueError):  # not a well-formed tag: looked up as typed
        pass
    return key


def lookup(code: str) -> Language | None:
    """The Language for a --lang code (case-insensitive, '_' or '-', ISO 639-1/2/3 or BCP 47), or None
    when espeak-ng has no voice for it."""
    raw = (code or "").strip().lower().replace("_", "-")
    if ALIASES.get(raw, raw) in LANGUAGES:  # a curated code as typed: no langcodes or espeak look-up
        return LANGUAGES[ALIASES.get(raw, raw)]
    key = _normalise(code)
    base = key.split("-")[0]
    voices = _espeak_voices()
    # The exact tag first (curated, then espeak's own regional voices), then its language subtag.
    for cands in ((raw, key), (base,)):
        for cand in cands:
            if ALIASES.get(cand, cand) in LANGUAGES:
                return LANGUAGES[ALIASES.get(cand, cand)]
        for cand in cands:
            if cand in voices:
                return Language(cand, cand, voices[cand])
    regional = sorted(v for v in voices if v.startswith(base + "-")) if base else []
    if regional:
        return Language(regional[0], regional[0], voices[regional[0]])
    return None


def language(code: str, needed_for: str = "") -> Language:
    """The Language for a --lang code; InputError for one espeak-ng does not speak. `needed_for` says
    what needs it (e.g. "transcript alignment") for the message."""
    lang = lookup(code)
    if lang is None and not _espeak_voices():
        from .errors import DependencyError

        raise DependencyError(f"language {code!r} needs espeak-ng's voices, and espeak-ng is not installed here "
                              f"(Debian/Ubuntu: apt-get install espeak-ng); without it only {', '.join(LANGUAGES)} "
                              "are known")
    if lang is None:
        what = f"{needed_for} needs a language espeak-ng speaks" if needed_for else "espeak-ng has no voice for it"
        raise InputError(f"unsupported language {code!r}: {what}; use one of: {', '.join(LANGUAGES)}, or any code "
                         "of `espeak-ng --voices`")
    return lang


def voice_for(code: str) -> str:
    """espeak-ng voice name for a --lang code."""
    return language(code).voice


def voice_or_none(code: str) -> str | None:
    """espeak-ng voice for a --lang code, or None when espeak-ng does not speak it."""
    lang = lookup(code)
    return None if lang is None else lang.voice


def display_name(code: str) -> str:
    lang = lookup(code)
    return code if lang is None else lang.name

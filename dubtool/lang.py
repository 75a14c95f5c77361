"""Languages dubtool speaks: `--lang` codes -> espeak-ng voice and display name."""

from __future__ import annotations

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
    return list(LANGUAGES)


def language(code: str) -> Language:
    """The Language for a --lang code (case-insensitive, '_' or '-'); InputError listing the
    supported codes for an unknown one."""
    key = (code or "").strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    lang = LANGUAGES.get(key)
    if lang is None:
        raise InputError(f"unsupported language {code!r}; use one of: {', '.join(LANGUAGES)}")
    return lang


def voice_for(code: str) -> str:
    """espeak-ng voice name for a --lang code."""
    return language(code).voice


def display_name(code: str) -> str:
    return language(code).name

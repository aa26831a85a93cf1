"""Filters for training pairs as they come from the web (data.filters), after clean.py's length
and ratio cleaning: language identification, copies, character checks, long tokens, numbers.

Web-crawled corpora (Common Crawl in WMT14, ParaCrawl, CCMatrix) carry text in the wrong
language, source copied to target, boilerplate and encoding junk; practitioners filter them
before training (OpusCleaner's filters in Mozilla's translations pipeline, Marian users'
language-id and ratio filters, OpenNMT-py's clean transform). Each filter here is off by
default, counts what it drops under its own name (the config key), and can be skipped per
corpus (`skip_filters`). Filters run in prepare's worker processes, chunk by chunk: they
depend on the pair alone, so the result does not depend on the number of workers.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from dataclasses import asdict
from typing import Callable

from mtrain.config import FilterConfig
from mtrain.config_checks import FILTERS
from mtrain.errors import MtrainError
from mtrain.extras import require

SAMPLES = 3  # dropped pairs kept per filter and chunk, for `mtrain prepare --dry-run`

LATIN = {"LATIN"}
SCRIPTS = {  # the scripts a language is written in (unicodedata names' first word), for max_other_script
    **dict.fromkeys(
        "af ca cs cy da de en es et eu fi fr ga gl hr hu id is it lt lv ms mt nb nl nn no pl pt ro sk sl sq sv sw "
        "tr vi".split(),
        LATIN,
    ),
    **dict.fromkeys("be bg kk mk ru sr uk".split(), {"CYRILLIC"}),
    **dict.fromkeys("ar fa ur".split(), {"ARABIC"}),
    **dict.fromkeys("hi mr ne".split(), {"DEVANAGARI"}),
    "el": {"GREEK"}, "he": {"HEBREW"}, "th": {"THAI"}, "ka": {"GEORGIAN"}, "hy": {"ARMENIAN"},
    "zh": {"CJK"}, "ja": {"CJK", "HIRAGANA", "KATAKANA"}, "ko": {"HANGUL", "CJK"},
}  # fmt: skip
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
NOT_WORD = re.compile(r"[\W_]+")


def enabled(filters: FilterConfig) -> list[str]:
    """The filters a config turns on, in FILTERS order."""
    values, defaults = asdict(filters), asdict(FilterConfig())
    return [name for name in FILTERS if values[name] != defaults[name]]


def base_language(code: str) -> str:
    """pt-BR -> pt, zh_Hans -> zh: what language identification and the script table know."""
    return re.split(r"[-_]", code)[0].lower()


def check(filters: FilterConfig, src_lang: str, tgt_lang: str) -> None:
    """Refuse, before any data is read, filters that cannot work for this language pair."""
    on = enabled(filters)
    if "max_other_script" in on:
        for lang in (src_lang, tgt_lang):
            if base_language(lang) not in SCRIPTS:
                raise MtrainError(
                    f"data.filters.max_other_script: no script is known for the language '{lang}'; turn the filter "
                    f"off (1.0) or name a language mtrain knows ({', '.join(sorted(SCRIPTS))})"
                )
    if "langid" in on:
        known = known_languages()
        for lang in (src_lang, tgt_lang):
            if _language(lang) not in known:
                raise MtrainError(
                    f"data.filters.langid: CLD2 does not know the language '{lang}'; turn langid off for this pair"
                )


ALIASES = {"iw": "he", "jw": "jv", "nb": "no", "nn": "no"}  # CLD2's older codes, and Norwegian as one language


def _language(code: str) -> str:
    base = base_language(code)
    return ALIASES.get(base, base)


@functools.lru_cache(maxsize=1)
def _cld2():  # noqa: ANN202 (the pycld2 module, an optional extra)
    return require("pycld2", "filters", "data.filters.langid")


def known_languages() -> set[str]:
    """The languages CLD2 identifies, as language codes."""
    return {_language(code) for _, code in _cld2().LANGUAGES if not code.startswith("xx-")}


def language_matches(text: str, lang: str, threshold: float) -> bool:
    """Whether CLD2 (Google's Compact Language Detector 2, its tables compiled into pycld2) finds
    `lang` to be the main language of `text`, covering at least `threshold` of it."""
    try:
        _, _, ((_, code, percent, _), *_) = _cld2().detect(text, bestEffort=True)
    except _cld2().error:  # text CLD2 cannot read (invalid UTF-8 after surrogates): not the language
        return False
    return _language(code) == lang and percent >= 100 * threshold


def is_copy(src: str, tgt: str, similarity: float) -> bool:
    """The same text on both sides (letters and digits, lowercased), or nearly (difflib's ratio,
    tried only when its cheap upper bounds allow it)."""
    a, b = NOT_WORD.sub("", src.lower()), NOT_WORD.sub("", tgt.lower())
    if a == b:
        return True
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return (
        matcher.real_quick_ratio() >= similarity
        and matcher.quick_ratio() >= similarity
        and matcher.ratio() >= similarity
    )


@functools.lru_cache(maxsize=65536)
def _category(char: str) -> str:
    return unicodedata.category(char)


@functools.lru_cache(maxsize=65536)
def _script(char: str) -> str:
    return unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]


def has_bad_characters(text: str) -> bool:
    """Control characters (tab aside), U+FFFD (what undecodable bytes became) or unassigned code points."""
    return any(c == "\ufffd" or (_category(c) in ("Cc", "Cn") and c != "\t") for c in text)


def letter_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def other_script_share(text: str, scripts: set[str]) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(_script(c) not in scripts for c in letters) / len(letters) if letters else 0.0


def numbers(text: str) -> list[str]:
    """The numbers of a text, separators removed (1,000.5 and 1.000,5 both read 10005), sorted."""
    return sorted(re.sub(r"[.,]", "", n) for n in NUMBER.findall(text))


def pair_tests(filters: FilterConfig, src_lang: str, tgt_lang: str, skip: list[str]) -> list[tuple[str, Callable]]:
    """(name, test) of each filter on for this corpus; a test returns True to drop the pair."""
    f, langs = filters, (_language(src_lang), _language(tgt_lang))
    tests = {
        "langid": lambda s, t: (
            not (
                language_matches(s, langs[0], f.langid_threshold) and language_matches(t, langs[1], f.langid_threshold)
            )
        ),
        "copy": lambda s, t: is_copy(s, t, f.copy_similarity),
        "control_chars": lambda s, t: has_bad_characters(s) or has_bad_characters(t),
        "min_letters": lambda s, t: min(letter_share(s), letter_share(t)) < f.min_letters,
        "max_other_script": lambda s, t: (
            max(
                other_script_share(s, SCRIPTS.get(langs[0], LATIN)), other_script_share(t, SCRIPTS.get(langs[1], LATIN))
            )
            > f.max_other_script
        ),
        "max_token_chars": lambda s, t: max(map(len, (s + " " + t).split())) > f.max_token_chars,
        "numbers": lambda s, t: numbers(s) != numbers(t),
    }
    # the cheap character checks first, language identification last: a pair is dropped by the first that fires
    order = ("control_chars", "max_token_chars", "min_letters", "max_other_script", "numbers", "copy", "langid")
    return [(name, tests[name]) for name in order if name in enabled(filters) and name not in skip]


def filter_pairs(
    src: list[str], tgt: list[str], tests: list[tuple[str, Callable]]
) -> tuple[list[str], list[str], dict[str, int], dict[str, list]]:
    """The pairs no test drops; per filter, how many it dropped and the first SAMPLES of them."""
    counts = {name: 0 for name, _ in tests}
    samples: dict[str, list] = {name: [] for name, _ in tests}
    kept_src, kept_tgt = [], []
    for s, t in zip(src, tgt):
        dropped_by = next((name for name, test in tests if test(s, t)), None)
        if dropped_by is None:
            kept_src.append(s)
            kept_tgt.append(t)
            continue
        counts[dropped_by] += 1
        if len(samples[dropped_by]) < SAMPLES:
            samples[dropped_by].append((s, t))
    return kept_src, kept_tgt, counts, samples

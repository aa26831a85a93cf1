"""Filters for training pairs as they come from the web (data.filters), after clean.py's length
and ratio cleaning: language identification (CLD2), copies, character checks, long tokens,
numbers.

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
from dataclasses import asdict
from typing import Callable

from mtrain.config import FilterConfig
from mtrain.config_checks import FILTERS
from mtrain.errors import MtrainError
from mtrain.extras import require

SAMPLES = 3  # dropped pairs kept per filter and chunk, for `mtrain prepare --dry-run`

# Unicode blocks of each script (letters only are counted), for max_other_script: regular
# expressions, so that the check runs at C speed over 10M pairs
BLOCKS = {
    "Latin": "A-Za-z\u00aa\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff"
    "\ufb00-\ufb06",
    "Cyrillic": "\u0400-\u052f\u1c80-\u1c8f\u2de0-\u2dff\ua640-\ua69f",
    "Greek": "\u0370-\u03ff\u1f00-\u1fff",
    "Arabic": "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff",
    "Hebrew": "\u0590-\u05ff\ufb1d-\ufb4f",
    "Devanagari": "\u0900-\u097f\ua8e0-\ua8ff",
    "Thai": "\u0e00-\u0e7f",
    "Georgian": "\u10a0-\u10ff\u2d00-\u2d2f\u1c90-\u1cbf",
    "Armenian": "\u0530-\u058f\ufb13-\ufb17",
    "Han": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f",
    "Kana": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "Hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
}
LANGUAGE_SCRIPTS = {  # the scripts a language is written in
    **dict.fromkeys(
        "af ca cs cy da de en es et eu fi fr ga gl hr hu id is it lt lv ms mt nl no pl pt ro sk sl sq sv sw tr vi"
        .split(),
        ("Latin",),
    ),
    **dict.fromkeys("be bg kk mk ru sr uk".split(), ("Cyrillic",)),
    **dict.fromkeys("ar fa ur".split(), ("Arabic",)),
    **dict.fromkeys("hi mr ne".split(), ("Devanagari",)),
    "el": ("Greek",), "he": ("Hebrew",), "th": ("Thai",), "ka": ("Georgian",), "hy": ("Armenian",),
    "zh": ("Han",), "ja": ("Han", "Kana"), "ko": ("Hangul", "Han"),
}  # fmt: skip
DIGIT = re.compile(r"\d")
BAD_CHARACTERS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffd\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
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
            if _language(lang) not in LANGUAGE_SCRIPTS:
                raise MtrainError(
                    f"data.filters.max_other_script: no script is known for the language '{lang}'; turn the filter "
                    f"off (1.0) or name a language mtrain knows ({', '.join(sorted(LANGUAGE_SCRIPTS))})"
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
    except (UnicodeEncodeError, _cld2().error):  # lone surrogates, or bytes CLD2 refuses: not the language
        return False
    return _language(code) == lang and percent >= 100 * threshold


def is_copy(src: str, tgt: str, similarity: float) -> bool:
    """The same text on both sides (letters and digits, lowercased), or nearly: difflib's ratio of
    the two at least `similarity`, tried only for sides of similar length that share at least half
    of their words (what near-copies do; the check is cheap, difflib is not)."""
    a, b = NOT_WORD.sub("", src.lower()), NOT_WORD.sub("", tgt.lower())
    if a == b:
        return True
    if 2 * min(len(a), len(b)) < similarity * (len(a) + len(b)):  # difflib's real_quick_ratio bound
        return False
    words_a, words_b = set(src.lower().split()), set(tgt.lower().split())
    if 2 * len(words_a & words_b) < min(len(words_a), len(words_b)):
        return False
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= similarity


def has_bad_characters(text: str) -> bool:
    """Control characters (tab aside), U+FFFD (what undecodable bytes became), lone surrogates or
    Unicode noncharacters."""
    return BAD_CHARACTERS.search(text) is not None


@functools.lru_cache(maxsize=8)
def _letter_count(text: str) -> int:
    """Letters in a text (cached: min_letters and max_other_script both count them)."""
    return sum(map(str.isalpha, text))


def letter_share(text: str) -> float:
    """Letters among the non-space characters (cleaned text has single spaces only)."""
    chars = len(text) - text.count(" ")
    return _letter_count(text) / chars if chars else 0.0


@functools.lru_cache(maxsize=None)
def _in_scripts(lang: str) -> re.Pattern:
    return re.compile("[" + "".join(BLOCKS[s] for s in LANGUAGE_SCRIPTS[lang]) + "]+")


def other_script_share(text: str, lang: str) -> float:
    """Letters outside the language's scripts, among all letters: what is left once the scripts'
    characters are taken out (ASCII text, for Latin-script languages, at once)."""
    letters = _letter_count(text)
    if not letters or (text.isascii() and "Latin" in LANGUAGE_SCRIPTS[lang]):
        return 0.0
    return sum(map(str.isalpha, _in_scripts(lang).sub("", text))) / letters


def numbers(text: str) -> list[str]:
    """The numbers of a text, separators removed (1,000.5 and 1.000,5 both read 10005), sorted."""
    if not DIGIT.search(text):
        return []
    return sorted(n.replace(",", "").replace(".", "") for n in NUMBER.findall(text))


def pair_tests(filters: FilterConfig, src_lang: str, tgt_lang: str, skip: list[str]) -> list[tuple[str, Callable]]:
    """(name, test) of each filter on for this corpus; a test returns True to drop the pair."""
    f, (src, tgt) = filters, (_language(src_lang), _language(tgt_lang))
    long_token = re.compile(f"\\S{{{f.max_token_chars + 1},}}")
    threshold = f.langid_threshold
    tests = {
        "langid": lambda s, t: not (language_matches(s, src, threshold) and language_matches(t, tgt, threshold)),
        "copy": lambda s, t: is_copy(s, t, f.copy_similarity),
        "control_chars": lambda s, t: has_bad_characters(s) or has_bad_characters(t),
        "min_letters": lambda s, t: min(letter_share(s), letter_share(t)) < f.min_letters,
        "max_other_script": lambda s, t: (
            max(other_script_share(s, src), other_script_share(t, tgt)) > f.max_other_script
        ),
        "max_token_chars": lambda s, t: long_token.search(s) is not None or long_token.search(t) is not None,
        "numbers": lambda s, t: numbers(s) != numbers(t),
    }
    # the cheap character checks first, language identification last: a pair is dropped by the first that fires
    order = ("control_chars", "max_token_chars", "min_letters", "max_other_script", "numbers", "copy", "langid")
    on = set(enabled(filters)) - set(skip)
    return [(name, tests[name]) for name in order if name in on]


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

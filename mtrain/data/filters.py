"""Filters for training pairs as they come from the web (data.filters), after clean.py's length
and ratio cleaning: language identification (CLD2), copies, character checks, long tokens,
numbers.

Web-crawled corpora (Common Crawl in WMT14, ParaCrawl, CCMatrix) carry text in the wrong
language, source copied to target, boilerplate and encoding junk; practitioners filter them
before training (OpusCleaner's filters in Mozilla's translations pipeline, Marian users'
language-id and ratio filters, OpenNMT-py's clean transform). Each filter here is off by
default, counts what it drops under its own name (the config key), and can be skipped per
corpus (`skip_filters`). Filters run in prepare's worker processes, chunk by chunk: they
depend on the pair alone, so the result does not depend on the number of workers. The character
checks look every character of a chunk up in tables indexed by code point (numpy), and the costly
checks (copies, numbers, CLD2) read only the pairs the cheaper ones kept: filtering costs a
fraction of encoding (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import asdict
from typing import Callable

import numpy as np
from rapidfuzz.distance import Indel

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
UNICODE = 0x110000  # code points
NEWLINE = ord("\n")


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


def language_matches(text: str, lang: str, threshold: float, hint: bool = False) -> bool:
    """Whether CLD2 (Google's Compact Language Detector 2, its tables compiled into pycld2) finds
    `lang` to be the main language of `text`, covering at least `threshold` of it. The text is read
    as plain text (CLD2 would otherwise skip what looks like HTML tags and entities). With `hint`,
    CLD2 is told to expect `lang`: short text in it is no longer misread (a French caption as
    English), while text in another language is still found to be that one (the off-target
    measure of multilingual models, scripts/eval_off_target.py)."""
    prior = {"hintLanguage": _language(lang)} if hint else {}
    try:
        _, _, ((_, code, percent, _), *_) = _cld2().detect(text, isPlainText=True, bestEffort=True, **prior)
    except (UnicodeEncodeError, _cld2().error):  # lone surrogates, or bytes CLD2 refuses: not the language
        return False
    return _language(code) == lang and percent >= 100 * threshold


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class Side:
    """One side of a chunk of pairs as a single text and its code points, so that the character
    filters look up every character in a table (indexed by code point) at numpy speed: one pass
    over the chunk instead of Python calls per line and character."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        self.text = "\n".join(lines)  # cleaned lines hold no newline
        self.points = _code_points(self.text).astype(np.intp)  # an index into the tables
        breaks = np.flatnonzero(self.points == NEWLINE)
        self.starts = np.concatenate(([0], breaks + 1)) if lines else breaks
        self.ends = np.concatenate((breaks, [len(self.points)])) if lines else breaks

    def count(self, table: np.ndarray) -> np.ndarray:
        """Per line, how many of its characters the table marks."""
        if not len(self.lines):
            return np.zeros(0, dtype=np.int32)
        marked = np.append(table[self.points], False)  # an empty last line starts past the last character
        counts = np.add.reduceat(marked, self.starts, dtype=np.int32)
        counts[self.starts == self.ends] = 0  # reduceat gives an empty line its next character
        return counts

    @functools.cached_property
    def letters(self) -> np.ndarray:
        """Per line, its letters (min_letters and max_other_script both need them)."""
        return self.count(_tables()["alpha"])

    def lines_with(self, table: np.ndarray) -> np.ndarray:
        """Per line, whether a character of it is marked."""
        return self._lines_at(np.flatnonzero(table[self.points]))

    def lines_with_run(self, table: np.ndarray, longer_than: int) -> np.ndarray:
        """Per line, whether it holds a run of unmarked characters longer than `longer_than` (a
        long token, with the table marking white space, the newlines between lines included)."""
        marked = np.concatenate(([-1], np.flatnonzero(table[self.points]), [len(self.points)]))
        long_run = np.diff(marked) - 1 > longer_than
        return self._lines_at(marked[:-1][long_run] + 1)

    def _lines_at(self, offsets: np.ndarray) -> np.ndarray:
        found = np.zeros(len(self.lines), dtype=bool)
        found[np.searchsorted(self.starts, offsets, side="right") - 1] = True
        return found

    def share(self, part: np.ndarray, whole: np.ndarray) -> np.ndarray:
        """part / whole per line, 0 where whole is 0."""
        return np.divide(part, whole, out=np.zeros(len(self.lines)), where=whole > 0)

    def normalized(self) -> list[str]:
        """Each line lowercased, with its letters and digits only (what re's [\\W_]+ leaves)."""
        lowered = _code_points(self.text.lower())
        kept = lowered[_tables()["alnum"][lowered] | (lowered == NEWLINE)]
        return kept.tobytes().decode("utf-32-le", "surrogatepass").split("\n")


@functools.lru_cache(maxsize=1)
def _tables() -> dict[str, np.ndarray]:
    """Per code point: letter (str.isalpha), letter or digit (str.isalnum, re's \\w less _), white
    space (str.isspace, re's \\s), the space character, decimal digit (re's \\d), BAD_CHARACTERS.
    Built once per process (half a second), and only when a filter is on."""
    everything = _everything()
    return {
        "alpha": np.fromiter(map(str.isalpha, everything), dtype=bool, count=UNICODE),
        "alnum": np.fromiter(map(str.isalnum, everything), dtype=bool, count=UNICODE),
        "space": np.fromiter(map(str.isspace, everything), dtype=bool, count=UNICODE),
        "blank": np.arange(UNICODE) == ord(" "),
        "digit": _matched(DIGIT, everything),
        "bad": _matched(BAD_CHARACTERS, everything),
    }


@functools.lru_cache(maxsize=1)
def _everything() -> str:
    """Every code point, in order: what the tables are made from."""
    return "".join(map(chr, range(UNICODE)))


def _matched(pattern: re.Pattern, everything: str) -> np.ndarray:
    marked = np.zeros(UNICODE, dtype=bool)
    for m in pattern.finditer(everything):
        marked[m.start() : m.end()] = True
    return marked


@functools.lru_cache(maxsize=None)
def _letters_outside(lang: str) -> np.ndarray:
    """Per code point, whether it is a letter outside the language's scripts."""
    scripts = re.compile("[" + "".join(BLOCKS[s] for s in LANGUAGE_SCRIPTS[lang]) + "]+")
    return _tables()["alpha"] & ~_matched(scripts, _everything())


def letter_shares(side: Side) -> np.ndarray:
    """Letters among the non-space characters of each line (cleaned text has single spaces only)."""
    return side.share(side.letters, side.ends - side.starts - side.count(_tables()["blank"]))


def other_script_shares(side: Side, lang: str) -> np.ndarray:
    """Letters outside the language's scripts, among all letters of each line."""
    return side.share(side.count(_letters_outside(lang)), side.letters)


def copies(src: Side, tgt: Side, alive: np.ndarray, similarity: float) -> np.ndarray:
    """The same text on both sides, or nearly: of their letters and digits, lowercased, at least
    `similarity` in common (the normalised Indel similarity, 2 x the longest common subsequence /
    both lengths, rapidfuzz's fuzz.ratio). Sides with no letter or digit are no copies. Only sides
    of similar length are compared (their lengths bound the similarity exactly), in C at
    bit-parallel speed: no pair can cost quadratic Python time."""
    a_lines, b_lines = src.normalized(), tgt.normalized()
    a_len, b_len = (np.array([len(x) for x in lines]) for lines in (a_lines, b_lines))
    similar_length = 2 * np.minimum(a_len, b_len) >= similarity * (a_len + b_len)
    found = np.zeros(len(src.lines), dtype=bool)
    for i in np.flatnonzero(alive & similar_length & (a_len > 0)).tolist():
        found[i] = Indel.normalized_similarity(a_lines[i], b_lines[i], score_cutoff=similarity) >= similarity
    return found


@functools.lru_cache(maxsize=1)
def _digits() -> dict[int, str]:
    """Every Unicode decimal digit (re's \\d: Arabic-Indic, Devanagari, full-width, ...) as its ASCII digit."""
    return {
        point: str(unicodedata.decimal(chr(point)))
        for point in range(UNICODE)
        if not 0xD800 <= point < 0xE000 and chr(point).isdecimal()
    }


def numbers(text: str) -> list[str]:
    """The numbers of a text as values, sorted: any script's digits read as ASCII, thousands separators
    removed (1,000 = 1.000 = 1000), the decimal mark read (1,000.5 = 1.000,5 = 1000.5; 1.5 is not 15).
    A separator is a decimal mark when it is the last one and either follows the other kind of
    separator or is not followed by exactly three digits."""
    return sorted(_number_value(n.translate(_digits())) for n in NUMBER.findall(text))


def _number_value(number: str) -> str:
    marks = [c for c in number if c in ".,"]
    groups = re.split(r"[.,]", number)
    decimal = bool(marks) and (len(set(marks)) == 2 and marks[-1] != marks[0] or len(groups[-1]) != 3)
    whole, fraction = ("".join(groups[:-1]), groups[-1]) if decimal else ("".join(groups), "")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def different_numbers(src: Side, tgt: Side, alive: np.ndarray) -> np.ndarray:
    """Pairs whose sides hold different numbers; only pairs with a digit on a side are read."""
    found = np.zeros(len(src.lines), dtype=bool)
    digits = _tables()["digit"]
    for i in np.flatnonzero(alive & (src.lines_with(digits) | tgt.lines_with(digits))).tolist():
        found[i] = numbers(src.lines[i]) != numbers(tgt.lines[i])
    return found


def wrong_language(src: Side, tgt: Side, alive: np.ndarray, langs: tuple[str, str], threshold: float) -> np.ndarray:
    """Pairs where CLD2 does not find each side's language (asked only of pairs still kept)."""
    found = np.zeros(len(src.lines), dtype=bool)
    for i in np.flatnonzero(alive).tolist():
        s, t = src.lines[i], tgt.lines[i]
        found[i] = not (language_matches(s, langs[0], threshold) and language_matches(t, langs[1], threshold))
    return found


def _either(src: Side, tgt: Side, check: Callable, *args) -> np.ndarray:  # noqa: ANN002
    return check(src, *args) | check(tgt, *args)


Test = Callable[[Side, Side, np.ndarray], np.ndarray]  # (sources, targets, pairs still kept) -> pairs to drop


def pair_tests(filters: FilterConfig, src_lang: str, tgt_lang: str, skip: list[str]) -> list[tuple[str, Test]]:
    """(name, test) of each filter on for this corpus; a test marks the pairs it drops among those
    still kept (the costly ones look at no others)."""
    f, langs = filters, (_language(src_lang), _language(tgt_lang))
    tests: dict[str, Test] = {
        "control_chars": lambda s, t, alive: _either(s, t, Side.lines_with, _tables()["bad"]),
        "max_token_chars": lambda s, t, alive: _either(
            s, t, Side.lines_with_run, _tables()["space"], f.max_token_chars
        ),
        "min_letters": lambda s, t, alive: np.minimum(letter_shares(s), letter_shares(t)) < f.min_letters,
        "max_other_script": lambda s, t, alive: (
            np.maximum(other_script_shares(s, langs[0]), other_script_shares(t, langs[1])) > f.max_other_script
        ),
        "numbers": different_numbers,
        "copy": lambda s, t, alive: copies(s, t, alive, f.copy_similarity),
        "langid": lambda s, t, alive: wrong_language(s, t, alive, langs, f.langid_threshold),
    }
    # the cheap character checks first, language identification last: a pair is dropped by the first that fires
    on = set(enabled(filters)) - set(skip)
    return [(name, test) for name, test in tests.items() if name in on]


def filter_pairs(
    src: list[str], tgt: list[str], tests: list[tuple[str, Test]]
) -> tuple[list[str], list[str], dict[str, int], dict[str, list]]:
    """The pairs no test drops; per filter, how many it dropped and the first SAMPLES of them. A
    pair counts for the first filter that drops it."""
    if not tests:
        return src, tgt, {}, {}
    counts, samples = {}, {}
    sides, alive = (Side(src), Side(tgt)), np.ones(len(src), dtype=bool)
    for name, test in tests:
        dropped = np.flatnonzero(test(*sides, alive) & alive)
        counts[name] = len(dropped)
        samples[name] = [(src[i], tgt[i]) for i in dropped[:SAMPLES]]
        alive[dropped] = False
    kept = np.flatnonzero(alive).tolist()
    return [src[i] for i in kept], [tgt[i] for i in kept], counts, samples

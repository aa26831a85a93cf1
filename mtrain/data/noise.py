"""The text users send, made from clean text: case changes, typos, no final punctuation, inline markup.

Each function takes a sentence (and a numpy generator where it draws) and returns the changed
sentence; what each does is defined here once, for the training-time augmentation
(data/augment.py, after OpusTrainer's UpperCase, TitleCase, Typos modifiers) and for the
robustness report's test variants (evaluation/robustness.py).
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

# Letters next to each other on a QWERTY keyboard: left and right, and the keys touching above and below.
KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
TYPO_KINDS = ("swap", "drop", "double", "neighbour")
TYPO_SHARE = 0.15  # the share of a sentence's eligible words that get a typo
URL_LIKE = re.compile(r"://|^www\.|@|[^\W\d_]\.[^\W\d_]")  # URLs, e-mail addresses, domain names, "e.g."
TITLE_WORD_START = re.compile(r"(?<!\S)([^\w\s]*)([^\W\d_])")  # a word's first letter, after leading punctuation
INLINE_ELEMENTS = (("<b>", "</b>"), ("<i>", "</i>"), ('<a href="#">', "</a>"))


def _keyboard_neighbours() -> dict[str, str]:
    neighbours: dict[str, str] = {}
    for r, row in enumerate(KEYBOARD_ROWS):
        for c, key in enumerate(row):
            near = [row[c - 1] if c else "", row[c + 1] if c + 1 < len(row) else ""]
            if r > 0:  # each row sits half a key right of the one above
                near.append(KEYBOARD_ROWS[r - 1][c : c + 2])
            if r + 1 < len(KEYBOARD_ROWS):
                near.append(KEYBOARD_ROWS[r + 1][max(c - 1, 0) : c + 1])
            neighbours[key] = "".join(sorted(set("".join(near))))
    return neighbours


KEYBOARD_NEIGHBOURS = _keyboard_neighbours()


def upper(text: str) -> str:
    """UPPER CASE (Python's str.upper: German ß becomes SS)."""
    return text.upper()


def lower(text: str) -> str:
    """all lower case (str.lower)."""
    return text.lower()


def title(text: str) -> str:
    """Title Case by a word-initial rule: the first letter of every space-separated word (after any
    leading punctuation) upper-cased, the rest of the word unchanged, so acronyms and German nouns
    keep their capitals (unlike str.title, which lower-cases them and capitalizes after apostrophes)."""
    return TITLE_WORD_START.sub(lambda m: m[1] + m[2].upper(), text)


def strip_final_punctuation(text: str) -> str:
    """The sentence without its final punctuation (every trailing character of a Unicode punctuation
    category: '.', '!', '?', closing quotes and brackets, ...)."""
    text = text.rstrip()
    while text and unicodedata.category(text[-1]).startswith("P"):
        text = text[:-1].rstrip()
    return text


def typo_eligible(word: str) -> bool:
    """Words a typo may touch: two letters or more, no digit, not a URL, address or domain."""
    letters = sum(ch.isalpha() for ch in word)
    return letters >= 2 and not any(ch.isdigit() for ch in word) and not URL_LIKE.search(word)


def typo(word: str, rng: np.random.Generator) -> str:
    """One character edit of one of the word's letters: swap it with the next letter, drop it,
    double it, or replace it with a key next to it on a QWERTY keyboard (the letter's case kept;
    letters off that keyboard, like ä or é, get one of the other three edits)."""
    letters = [i for i, ch in enumerate(word) if ch.isalpha()]
    kind = TYPO_KINDS[int(rng.integers(len(TYPO_KINDS)))]
    if kind == "swap":
        pairs = [i for i in letters if i + 1 < len(word) and word[i + 1].isalpha() and word[i + 1] != word[i]]
        if pairs:
            i = pairs[int(rng.integers(len(pairs)))]
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        kind = "double"
    i = letters[int(rng.integers(len(letters)))]
    if kind == "neighbour" and word[i].lower() in KEYBOARD_NEIGHBOURS:
        keys = KEYBOARD_NEIGHBOURS[word[i].lower()]
        key = keys[int(rng.integers(len(keys)))]
        return word[:i] + (key.upper() if word[i].isupper() else key) + word[i + 1 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # double (and neighbour off the keyboard)


def typos(text: str, rng: np.random.Generator, share: float = TYPO_SHARE) -> str:
    """One typo in each of round(share x n) of the sentence's n eligible words (at least one when any
    word is eligible), the words drawn at random; spacing, numbers and URLs untouched."""
    parts = re.split(r"(\s+)", text)
    eligible = [i for i, part in enumerate(parts) if typo_eligible(part)]
    if not eligible:
        return text
    count = min(len(eligible), max(1, round(share * len(eligible))))
    for i in rng.choice(eligible, count, replace=False).tolist():
        parts[i] = typo(parts[i], rng)
    return "".join(parts)


def inline_element(text: str, rng: np.random.Generator) -> str:
    """An inline HTML element (<b>, <i> or <a href="#">, at random) around one to three consecutive
    words; the final punctuation of the last word stays outside the element."""
    words = text.split()
    if not words:
        return text
    size = min(len(words), int(rng.integers(1, 4)))
    start = int(rng.integers(len(words) - size + 1))
    opening, closing = INLINE_ELEMENTS[int(rng.integers(len(INLINE_ELEMENTS)))]
    last = words[start + size - 1]
    kept = strip_final_punctuation(last) or last
    words[start + size - 1] = kept + closing + last[len(kept) :]
    words[start] = opening + words[start]
    return " ".join(words)

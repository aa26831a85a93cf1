"""Case tags: UPPER CASE and Title Case input read as the sentence-cased text the model knows.

A sentence in UPPER CASE is the same sentence as its sentence-cased form, but its subwords are not:
a model that learns each form from its own pieces needs many examples of each and still loses a
third of its BLEU on them (docs/results.md, Robustness). With tokenizer.case_tags, the case of a
whole sentence travels as a tag instead, as inline casing does for words (OpenNMT Tokenizer's
case_markup; Berard et al., 2019, WMT19 robustness task): the source becomes `<upper>` and the
sentence in sentence case, the model writes `<upper>` before its (sentence-cased) translation, and
decoding applies the case to it. Training teaches the tags with data.augment.upper and title.

What counts as UPPER CASE or Title Case is decided here once, for the encoder of user input
(Tokenizer.encode_input) and the decoder of outputs (Tokenizer.decode_tgt_batch).
"""

from __future__ import annotations

from mtrain.data import noise
from mtrain.special import TITLE_TAG, UPPER_TAG

CASE_TAGS = {"upper": UPPER_TAG, "title": TITLE_TAG}
MIN_WORDS = {"upper": 2, "title": 3}  # fewer cased words than this: an acronym or a name, left as it is


def sentence_case_of(line: str) -> str | None:
    """The case of a whole sentence: "upper" when no letter is lower-case (in two words or more
    with cased letters), "title" when every word that starts with a letter starts with a capital
    (noise.title's word-initial rule; three such words or more), else None (sentence case, lower
    case, scripts without case)."""
    cased = [word for word in line.split() if any(ch.isupper() or ch.islower() for ch in word)]
    if len(cased) >= MIN_WORDS["upper"] and not any(ch.islower() for ch in line):
        return "upper"
    initials = [match[2] for word in line.split() if (match := noise.TITLE_WORD_START.match(word))]
    if len(initials) >= MIN_WORDS["title"] and all(not ch.islower() for ch in initials):
        return "title"
    return None


def sentence_cased(line: str) -> str:
    """The line lower-cased with its first letter upper-cased: how a sentence usually arrives."""
    text = line.lower()
    for i, ch in enumerate(text):
        if ch.isalpha():
            return text[:i] + ch.upper() + text[i + 1 :]
    return text


def recased(text: str, case: str | None) -> str:
    """An output in the case its source came in (noise.upper or noise.title; None: as it is)."""
    if case == "upper":
        return noise.upper(text)
    if case == "title":
        return noise.title(text)
    return text

"""Soft terms: the target term written into the source, learned in training (Dinu et al., 2019,
"Training Neural Machine Translation To Apply Terminology Constraints").

In training (data.augment.terms), a pair's source gets, after some of its words (terms_per_pair,
drawn in proportion to their target pieces), the target words an aligner links each to, between
markers: `A dog <t> Hund </t> runs.` -> `Ein Hund rennt.`. The model learns to copy what stands
between the markers into its translation. At translation time (`translate --glossary FILE
--terminology soft`), each glossary term found in a sentence is written in the same way
(`Glossary.annotate`), and the translation is an ordinary one: every engine and every export does
it, since it is only text.

Both write the same text, so both are cut into the same pieces: the words of a sentence are its
whitespace-separated words (a piece starting with "▁" starts one); a word's trailing punctuation
stays after the annotation (`dog <t> Hund </t>.`), and the target side's is left out.
"""

from __future__ import annotations

import re

import numpy as np

from mtrain.data.tokenizer import word_numbers
from mtrain.special import TERM_CLOSE, TERM_OPEN

MAX_TERM_WORDS = 3  # the longest target side an annotation copies
MIN_LETTERS = 3  # shorter source words (articles, prepositions) are not annotated
EDGE_PUNCTUATION = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


def annotated(word: str, target: str, masked: bool = False) -> str:
    """`word <t> target </t>`, the word's trailing punctuation after the annotation; `masked`: the
    word itself left out (`<t> target </t>`), its punctuation kept."""
    lead, core, tail = EDGE_PUNCTUATION.match(word).groups()
    return f"{lead}{'' if masked else core + ' '}{TERM_OPEN} {target} {TERM_CLOSE}{tail}"


def annotate_pair(
    source: str,
    target: str,
    source_pieces: list[str],
    target_pieces: list[str],
    links: np.ndarray,
    rng: np.random.Generator,
    mask: float = 0.0,
    count: int = 1,
) -> str:
    """`source` with up to `count` of its words annotated with the target words `links` (flat (source
    piece, target piece) positions) align them to; the source unchanged when no word qualifies: at
    least MIN_LETTERS letters, linked to one to MAX_TERM_WORDS adjacent target words. Each annotation
    is left out with probability `mask` (no draw when 0: the annotations stay as without it)."""
    source_words, target_words = source.split(" "), target.split(" ")
    src_word, tgt_word = word_numbers(source_pieces), word_numbers(target_pieces)
    if len(source_words) != (src_word[-1] + 1 if src_word else 0) or len(target_words) != (
        tgt_word[-1] + 1 if tgt_word else 0
    ):
        return source  # the text's spaces and the pieces' words disagree (a rare normalisation): leave it
    letter_pieces = np.bincount(tgt_word, [any(c.isalnum() for c in piece) for piece in target_pieces])
    candidates = term_candidates(source_words, target_words, src_word, tgt_word, letter_pieces, links)
    if not candidates:
        return source
    chosen = draw_terms(candidates, rng, count)
    masked = {word: bool(mask) and rng.random() < mask for word in sorted(chosen)}
    return " ".join(annotated(w, chosen[i], masked[i]) if i in chosen else w for i, w in enumerate(source_words))


def term_candidates(
    source_words: list[str],
    target_words: list[str],
    src_word: list[int],
    tgt_word: list[int],
    letter_pieces: np.ndarray,
    links: np.ndarray,
) -> list[tuple[int, str, int]]:
    """(source word, its target term, the term's pieces with a letter or digit) of each word that can
    be annotated; `letter_pieces`: those pieces per target word."""
    linked: dict[int, set[int]] = {}
    for i, j in links.reshape(-1, 2).tolist():
        if i < len(src_word) and j < len(tgt_word):
            linked.setdefault(src_word[i], set()).add(tgt_word[j])
    candidates = []
    for word, targets in sorted(linked.items()):
        span = range(min(targets), max(targets) + 1)
        letters = sum(c.isalpha() for c in source_words[word])
        if letters >= MIN_LETTERS and len(span) <= MAX_TERM_WORDS and len(span) == len(targets):
            term = EDGE_PUNCTUATION.match(" ".join(target_words[j] for j in span)).group(2)
            if term:
                candidates.append((word, term, max(1, int(letter_pieces[span.start : span.stop].sum()))))
    return candidates


def draw_terms(candidates: list[tuple[int, str, int]], rng: np.random.Generator, count: int) -> dict[int, str]:
    """Up to `count` candidates, {source word: term}, each drawn in proportion to its pieces: a
    glossary's terms are the rarer words the vocabulary cuts into several pieces, and copying those
    piece by piece is what a model trained on its frequent one-piece words fails at."""
    weights = np.array([pieces for _, _, pieces in candidates], np.float64)
    picks = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False, p=weights / weights.sum())
    return {candidates[k][0]: candidates[k][1] for k in picks.tolist()}

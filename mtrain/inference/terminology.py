"""Translating with a glossary (data/glossary.py): hard constraints on mtrain's own search, or
soft terms written into the source for a model trained to use them (data/terms.py).

Each line's applicable terms become target token sequences, encoded with the target vocabulary as
they appear inside a sentence (sentencepiece marks a word's start the same way there), and the line
is translated by the constrained beam search (constrained.py), so every translation contains every
applicable term. A line to which no term applies is translated by the plain search, exactly as
without a glossary. A line whose terms cannot fit in its output length limit is translated without
them and reported, not a failure of the whole input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mtrain.data.glossary import Glossary, Term
from mtrain.data.tokenizer import Tokenizer
from mtrain.errors import MtrainError
from mtrain.inference.constrained import MAX_LENPEN, min_length
from mtrain.inference.engine import Progress
from mtrain.inference.search import Hypothesis
from mtrain.inference.translator import Translator, encode_sources
from mtrain.special import TERM_CLOSE, TERM_OPEN

log = logging.getLogger("mtrain")


def check_soft_terms(tokenizer: Tokenizer) -> None:
    """Soft terms need a model trained with data.augment.terms: its source vocabulary has the markers."""
    for marker in (TERM_OPEN, TERM_CLOSE):
        try:
            tokenizer.tag_id(marker)
        except MtrainError:
            raise MtrainError(
                f"--terminology soft needs a model trained with data.augment.terms (its source vocabulary has no "
                f"{marker} piece); use --terminology hard"
            ) from None


@dataclass
class GlossaryResult:
    results: list[list[Hypothesis]]
    unmet: list[int] = field(default_factory=list)  # lines translated without their terms (they did not fit)


def translate_with_glossary(
    translator: Translator,
    lines: list[str],
    glossary: Glossary,
    beam: int | None = None,
    nbest: int = 1,
    progress: Progress | None = None,
    first_line: int = 0,
) -> GlossaryResult:
    """`nbest` hypotheses for every line, each containing every glossary term that applies to its line."""
    terms = [glossary.applicable(line) for line in lines]
    return translate_with_terms(translator, lines, terms, beam, nbest, progress, first_line)


def translate_with_terms(
    translator: Translator,
    lines: list[str],
    terms: list[list[Term]],
    beam: int | None = None,
    nbest: int = 1,
    progress: Progress | None = None,
    first_line: int = 0,
) -> GlossaryResult:
    """`nbest` hypotheses for every line, each containing the target sides of that line's `terms`."""
    tokenizer = translator.tokenizer
    targets = sorted({t.target for line_terms in terms for t in line_terms})
    encoded = dict(zip(targets, tokenizer.encode_tgt(targets))) if targets else {}
    constraints = [[encoded[t.target] for t in line_terms] for line_terms in terms]
    limits = _length_limits(translator, lines)
    fits = [bool(c) and min_length(c) <= limit for c, limit in zip(constraints, limits)]
    unmet = [i for i, c in enumerate(constraints) if c and not fits[i]]
    results: list[list[Hypothesis]] = [[] for _ in lines]
    constrained = [i for i in range(len(lines)) if fits[i]]
    if constrained:
        _note_lenpen(translator.config.lenpen)
        found = translator.translate_constrained(
            [lines[i] for i in constrained], [constraints[i] for i in constrained], beam, nbest, progress
        )
        for i, hyps in zip(constrained, found):
            results[i] = hyps
        unmet += [i for i in constrained if not results[i]]
    plain = [i for i in range(len(lines)) if not results[i]]
    if plain:
        for i, hyps in zip(plain, translator.translate_nbest([lines[i] for i in plain], beam, nbest, progress)):
            results[i] = hyps
    for i in sorted(unmet):
        log.warning(
            "line %d: its glossary terms do not fit in its output length limit; translated without them",
            first_line + i + 1,
        )
    return GlossaryResult(results, sorted(unmet))


def _note_lenpen(lenpen: float) -> None:
    if lenpen > MAX_LENPEN:
        log.info(
            "hard terms: length penalty %g searched as %g (above it, a translation that may not end before "
            "its term runs on to put the term last)",
            lenpen,
            MAX_LENPEN,
        )


def _length_limits(translator: Translator, lines: list[str]) -> list[int]:
    """Each line's output length limit in tokens, </s> included (search.py's a * |source| + b)."""
    c = translator.config
    ids = encode_sources(translator, lines)
    return [min(int(c.max_len_a * len(seq)) + c.max_len_b, translator.max_src) for seq in ids]

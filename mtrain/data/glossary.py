"""Glossaries: the terms a translation must use (`mtrain translate --glossary`, `"glossary"` in /translate).

A glossary is a tab-separated file, one term a line: `source term<TAB>target term`, several words
allowed on either side; lines starting with `#` and empty lines are skipped. A term applies to a
sentence when its source side occurs there as whole words; the match ignores case (Unicode case
folding) unless the glossary is read with `case_sensitive`. Where two terms' source sides overlap in
a sentence, the longer one applies (the earlier one between equals). The target side is used
exactly as written: its case is what the translation will contain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mtrain.errors import MtrainError
from mtrain.special import TERM_CLOSE, TERM_OPEN

TERMINOLOGY = ("hard", "soft")  # how a glossary applies: constrained search, or terms written into the source


@dataclass(frozen=True)
class Term:
    source: str
    target: str


class Glossary:
    def __init__(self, terms: list[Term], case_sensitive: bool = False):
        self.terms, self.case_sensitive = terms, case_sensitive
        flags = 0 if case_sensitive else re.IGNORECASE
        # longest first, so that an alternation prefers "New York City" to "New York" at one place
        ordered = sorted(range(len(terms)), key=lambda i: -len(terms[i].source))
        self._order = ordered
        self._pattern = (
            re.compile("|".join(rf"(?<!\w)({re.escape(terms[i].source)})(?!\w)" for i in ordered), flags)
            if terms
            else None
        )

    def __len__(self) -> int:
        return len(self.terms)

    def annotate(self, sentence: str, form: str = "after") -> str:
        """`sentence` with each term occurrence followed by its target between the term markers, as
        data.augment.terms writes training sources (data/terms.py): "a dog." -> "a dog <t> Hund </t>.";
        form "replace" (decode.soft_terms): the target instead of the occurrence, as term_mask writes
        them: "a <t> Hund </t>."."""
        if self._pattern is None:
            return sentence
        parts, start = [], 0
        for match in self._pattern.finditer(sentence):
            term = self.terms[self._order[match.lastindex - 1]]
            kept = sentence[start : match.start()] if form == "replace" else sentence[start : match.end()] + " "
            parts += [kept, f"{TERM_OPEN} {term.target} {TERM_CLOSE}"]
            start = match.end()
        return "".join(parts) + sentence[start:]

    def applicable(self, sentence: str) -> list[Term]:
        """The terms whose source side occurs in `sentence` (whole words, non-overlapping, longest
        first at each place), each once, in order of first occurrence."""
        if self._pattern is None:
            return []
        found: list[Term] = []
        for match in self._pattern.finditer(sentence):
            term = self.terms[self._order[match.lastindex - 1]]
            if term not in found:
                found.append(term)
        return found


def _key(text: str, case_sensitive: bool) -> str:
    return " ".join(text.split()) if case_sensitive else " ".join(text.casefold().split())


def glossary_from_pairs(pairs: list[tuple[str, str]], where: list[str], case_sensitive: bool = False) -> Glossary:
    """A glossary from (source, target) pairs; `where` names each pair in errors ("line 3 of g.tsv")."""
    terms: list[Term] = []
    seen: dict[str, tuple[str, str]] = {}
    for (source, target), place in zip(pairs, where):
        source, target = " ".join(source.split()), " ".join(target.split())
        if not source or not target:
            side = "source" if not source else "target"
            raise MtrainError(f"{place}: the {side} term is empty; write 'source term<TAB>target term'")
        key = _key(source, case_sensitive)
        if key in seen:
            if seen[key][0] != target:
                raise MtrainError(
                    f"{place}: '{source}' is already given as '{seen[key][0]}' on {seen[key][1]}; a source "
                    "term takes one target: keep one of the two"
                )
            continue
        seen[key] = (target, place)
        terms.append(Term(source, target))
    return Glossary(terms, case_sensitive)


def read_glossary(path: Path, case_sensitive: bool = False) -> Glossary:
    """A glossary file (module docstring); every malformed line is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise MtrainError(f"glossary file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MtrainError(f"{path} is not UTF-8 text; convert it, e.g. with iconv -t UTF-8") from None
    pairs, where = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise MtrainError(f"line {number} of {path} has no tab; write 'source term<TAB>target term'")
        source, target, *rest = line.split("\t")
        if rest:
            raise MtrainError(f"line {number} of {path} has {len(rest) + 1} tabs; write 'source term<TAB>target term'")
        pairs.append((source, target))
        where.append(f"line {number} of {path}")
    return glossary_from_pairs(pairs, where, case_sensitive)

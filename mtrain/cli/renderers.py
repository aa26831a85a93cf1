"""What `mtrain translate` writes for a group of input lines: translations, n-best lists, word
alignments, confidences, tags put back; and the search behind them, with or without a glossary.
Each renderer is `(first line number, lines, progress=None) -> their output text`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from mtrain.errors import MtrainError

if TYPE_CHECKING:
    from mtrain.data.glossary import Glossary
    from mtrain.data.tokenizer import Tokenizer
    from mtrain.inference.engine import Progress, TranslationEngine
    from mtrain.inference.search import Hypothesis
    from mtrain.inference.translator import Translator

Render = Callable[..., str]  # (first line number, lines, progress=None) -> their output text


@dataclass
class Terms:
    """A glossary and how it applies (inference/terminology.py): hard constraints or soft terms."""

    glossary: Glossary
    terminology: str = "hard"


def search(
    translator: TranslationEngine,
    lines: list[str],
    nbest: int = 1,
    progress: Progress | None = None,
    first: int = 0,
    terms: Terms | None = None,
) -> list[list[Hypothesis]]:
    """`nbest` hypotheses of every line; with terms, each containing its line's terms (hard), or
    translated with the terms written into the source (soft)."""
    if terms is not None and terms.terminology == "soft":
        lines = [terms.glossary.annotate(line, translator.config.soft_terms) for line in lines]
    if terms is None or terms.terminology == "soft":
        return translator.translate_nbest(lines, nbest=nbest, progress=progress, first_line=first)
    from mtrain.inference.terminology import translate_with_glossary

    found = translate_with_glossary(translator, lines, terms.glossary, nbest=nbest, progress=progress, first_line=first)
    return found.results


def check_terms(translator: TranslationEngine, terms: Terms | None) -> None:
    from mtrain.inference.terminology import check_soft_terms
    from mtrain.inference.translator import Translator

    if terms is None:
        return
    if terms.terminology == "soft":
        check_soft_terms(translator.tokenizer)
        return
    if not isinstance(translator, Translator):
        raise MtrainError(
            "--glossary constrains mtrain's own beam search, which CTranslate2 does not run; translate the "
            "--checkpoint with --engine torch, or use --terminology soft with a model trained for it"
        )
    if translator.config.sampling:
        raise MtrainError("--glossary constrains the beam search; leave out --sampling")


def hypotheses_renderer(
    translator: TranslationEngine, nbest: int, aligner: Aligner | None, terms: Terms | None = None
) -> Render:
    """Translations, n-best lists (`format_hypotheses`) and word alignments."""

    def render(first: int, lines: list[str], progress: object = None) -> str:
        results = search(translator, lines, nbest, progress, first, terms)
        links = aligner(lines, results) if aligner else [None] * len(results)
        return "".join(
            format_hypotheses(first + i, hyps, translator.tokenizer, nbest, link) + "\n"
            for i, (hyps, link) in enumerate(zip(results, links))
        )

    return render


def check_scores(scores: bool, mc_dropout: int, nbest: int, alignment: bool) -> None:
    if mc_dropout and not scores:
        raise MtrainError("--mc-dropout N changes the confidence --scores writes; add --scores")
    if not 0 <= mc_dropout <= 100:
        raise MtrainError(f"--mc-dropout takes 1 to 100 passes (0: off), got {mc_dropout}")
    if scores and (nbest != 1 or alignment):
        raise MtrainError("--scores writes 'translation<TAB>confidence' per line; leave out --nbest and --alignment")


def scored_renderer(translator: TranslationEngine, mc_dropout: int, terms: Terms | None = None) -> Render:
    """Each line's best translation and its confidence (inference/confidence.py), whose meaning goes to stderr."""
    from mtrain.inference.confidence import check_mc_dropout, line_confidences, meaning

    check_mc_dropout(translator, mc_dropout)
    typer.echo(f"confidence: {meaning(translator.info, mc_dropout)}", err=True)

    def render(first: int, lines: list[str], progress: object = None) -> str:
        results = search(translator, lines, 1, progress, first, terms)
        found = line_confidences(translator, lines, results, mc_dropout)
        decode = translator.tokenizer.decode_tgt
        return "".join(f"{decode(hyps[0].tokens)}\t{c:.4f}\n" for hyps, c in zip(results, found))

    return render


def markup_renderer(translator: TranslationEngine, markup_format: str, alignment_layer: int) -> Render:
    """Each line's translation with its tags put back (insight/markup.py)."""
    from mtrain.insight.markup import MarkupTranslator

    markup = MarkupTranslator(translator, markup_format, alignment_layer)
    return lambda first, lines, progress=None: "".join(text + "\n" for text in markup(lines))


def format_hypotheses(
    index: int, hyps: list[Hypothesis], tokenizer: Tokenizer, nbest: int, links: list[str] | None = None
) -> str:
    """One line, or with n-best exactly `nbest` lines `index ||| text ||| score` (an empty input
    line, which has one empty hypothesis, gets `nbest` empty records); with `links` (Pharaoh word
    alignments, one per hypothesis) each record ends with ` ||| i-j ...`."""
    hyps = hyps + hyps[-1:] * (nbest - len(hyps))
    tails = [f" ||| {a}" for a in links] if links is not None else []
    tails += (tails[-1:] or [""]) * (nbest - len(tails))
    if nbest == 1:
        return tokenizer.decode_tgt(hyps[0].tokens) + tails[0]
    return "\n".join(
        f"{index} ||| {tokenizer.decode_tgt(h.tokens)} ||| {h.score:.4f}{tail}" for h, tail in zip(hyps, tails)
    )


class Aligner:
    """Word alignments for `translate --alignment` (torch engine: it needs the model's attention)."""

    def __init__(self, translator: Translator, layer: int):
        from mtrain.inference.ensemble import Ensemble
        from mtrain.inference.translator import Translator
        from mtrain.insight.alignment import alignment_source

        if not isinstance(translator, Translator):
            raise MtrainError(
                "--alignment needs the torch engine (it reads mtrain's own cross-attention); drop --engine "
                "ctranslate2 / --model"
            )
        if isinstance(translator.model, Ensemble):
            raise MtrainError("--alignment reads one model's cross-attention; give a single --checkpoint")
        self.translator = translator
        self.layer, self.head = alignment_source(translator, layer)

    def __call__(self, lines: list[str], results: list[list[Hypothesis]]) -> list[list[str]]:
        from mtrain.data.alignments import pharaoh
        from mtrain.insight.alignment import alignments

        flat = [(line, h.tokens) for line, hyps in zip(lines, results) for h in hyps]
        found = iter(
            alignments(self.translator, [f[0] for f in flat], [f[1] for f in flat], self.layer, head=self.head)
        )
        return [[pharaoh(next(found)) for _ in hyps] for hyps in results]

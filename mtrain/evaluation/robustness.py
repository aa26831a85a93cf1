"""The robustness report: how a model holds up on the text users send, from any test set.

Each variant changes the test set deterministically (data/noise.py defines every change; a seed
draws typos and markup): upper and title change source and reference alike (a cased output is
expected), lower and typos only the source, tags puts an inline element around one to three source
words. The tags variant is scored on the output with its markup removed (the translation of the
text), and `tags_kept` is the share of outputs whose tags are the source's: the same elements with
the same attributes, well-formed, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser

import numpy as np

from mtrain.data import noise
from mtrain.evaluation.scores import corpus_scores

VARIANTS = ("clean", "upper", "title", "lower", "typos", "tags")


Variant = tuple[list[str], list[str]]  # sources, references


def robustness_variants(sources: list[str], references: list[str], seed: int = 1) -> dict[str, Variant]:
    """Each variant's (sources, references)."""
    typo_rng, tag_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    return {
        "clean": (sources, references),
        "upper": ([noise.upper(s) for s in sources], [noise.upper(r) for r in references]),
        "title": ([noise.title(s) for s in sources], [noise.title(r) for r in references]),
        "lower": ([noise.lower(s) for s in sources], references),
        "typos": ([noise.typos(s, typo_rng) for s in sources], references),
        "tags": ([noise.inline_element(s, tag_rng) for s in sources], references),
    }


class _Markup(HTMLParser):
    """The elements (start and end tags with attributes, in order) and the text of a line."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(("start", tag, tuple(attrs)))

    def handle_endtag(self, tag: str) -> None:
        self.tags.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def well_formed(tags: list[tuple]) -> bool:
    """Every element closed, in the reverse order of opening."""
    open_elements = []
    for event in tags:
        if event[0] == "start":
            open_elements.append(event[1])
        elif not open_elements or open_elements.pop() != event[1]:
            return False
    return not open_elements


def tags_kept(source: str, output: str) -> bool:
    """Whether the output holds the source's elements, attributes included, well-formed, in order."""
    expected, found = _Markup(source).tags, _Markup(output).tags
    return found == expected and well_formed(found)


def without_markup(text: str) -> str:
    """The text of a line with its tags removed and entities decoded, spaces collapsed."""
    return " ".join("".join(_Markup(text).text).split())


def robustness_report(
    translate: Callable[[list[str]], list[str]],
    sources: list[str],
    references: list[str],
    tgt_lang: str | None = None,
    seed: int = 1,
    translate_markup: Callable[[list[str]], list[str]] | None = None,
) -> dict[str, dict[str, float]]:
    """{variant: {"bleu", "chrf"} (and "tags_kept" for tags)}, translating each variant once (the
    tags variant with `translate_markup` where given: translate --format html)."""
    report = {}
    for name, (variant_sources, variant_references) in robustness_variants(sources, references, seed).items():
        outputs = (translate_markup if name == "tags" and translate_markup else translate)(variant_sources)
        scored = [without_markup(o) for o in outputs] if name == "tags" else outputs
        scores = corpus_scores(scored, [variant_references], tgt_lang=tgt_lang)
        report[name] = {"bleu": round(scores["bleu"], 2), "chrf": round(scores["chrf"], 2)}
        if name == "tags":
            kept = sum(tags_kept(s, o) for s, o in zip(variant_sources, outputs))
            report[name]["tags_kept"] = round(100 * kept / max(len(outputs), 1), 1)
    return report


def report_table(report: dict[str, dict[str, float]]) -> str:
    """The report as a plain-text table, one variant a row."""
    clean = report["clean"]["bleu"]
    lines = [f"{'variant':<8} {'BLEU':>6} {'chrF':>6} {'of clean BLEU':>14} {'tags kept':>10}"]
    for name, scores in report.items():
        share = f"{100 * scores['bleu'] / clean:.1f}%" if clean else "-"
        kept = f"{scores['tags_kept']:.1f}%" if "tags_kept" in scores else ""
        lines.append(f"{name:<8} {scores['bleu']:>6.2f} {scores['chrf']:>6.2f} {share:>14} {kept:>10}")
    return "\n".join(lines)

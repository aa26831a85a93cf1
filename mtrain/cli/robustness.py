"""`mtrain eval-robustness`: translate a test set in the forms users send it (UPPER CASE, Title Case,
lower case, typos, inline markup) and score each against its reference (evaluation/robustness.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mtrain.cli.evaluate import read_aligned
from mtrain.cli.options import (
    BeamOption,
    DeviceOption,
    EngineOption,
    LenpenOption,
    MaxTokensOption,
    ModelDirOption,
    PrecisionOption,
    QuantizationOption,
    ThreadsOption,
)
from mtrain.cli.shell import command
from mtrain.data.sources import read_lines
from mtrain.errors import MtrainError


@command("eval-robustness", short_help="Score a model on UPPER, Title, lower case, typos and inline markup.")
def eval_robustness(
    src: Path = typer.Option(..., "--src", metavar="FILE", help="The test set's source, one sentence a line."),
    ref: Path = typer.Option(..., "--ref", "-r", metavar="FILE", help="Its reference translations."),
    checkpoint: Optional[list[Path]] = typer.Option(
        None, "--checkpoint", metavar="FILE", help="The model (repeat it for an ensemble)."
    ),
    model: Optional[Path] = ModelDirOption,
    beam: Optional[int] = BeamOption,
    lenpen: Optional[float] = LenpenOption,
    max_tokens: Optional[int] = MaxTokensOption,
    engine: str = EngineOption,
    quantization: Optional[str] = QuantizationOption,
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    seed: int = typer.Option(1, "--seed", metavar="N", help="Draws the typos and the tagged words."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object, a key per variant."),
    markup_format: str = typer.Option(
        "text",
        "--format",
        metavar="text|html",
        help="html: translate the tags variant keeping its markup, as translate --format html does; text: as text.",
    ),
) -> None:
    """Translate the test set as it is (clean) and in five changed forms, and print BLEU and chrF of
    each: upper and title (source and reference changed alike), lower and typos (source only), and
    tags (an inline <b>, <i> or <a href> element around one to three source words; scored without
    the markup, with the share of outputs that keep the source's tags)."""
    from mtrain.deploy.engines import open_engine
    from mtrain.evaluation.robustness import report_table, robustness_report

    if not checkpoint and model is None:
        raise MtrainError("give a model: --checkpoint CKPT or --model DIR")
    if markup_format not in ("text", "html"):
        raise MtrainError(f"--format must be text or html, got {markup_format!r}")
    if not src.is_file():
        raise MtrainError(f"source file not found: {src}")
    if not ref.is_file():
        raise MtrainError(f"reference file not found: {ref}")
    sources = read_lines(src)
    if not sources:
        raise MtrainError(f"there is nothing to score: {src} is empty")
    references = read_aligned(ref, len(sources), "the reference ", "give the references of the same source file")
    engine = open_engine(
        checkpoint,
        model,
        engine,
        device,
        precision,
        threads,
        quantization,
        beam=beam,
        lenpen=lenpen,
        max_tokens=max_tokens,
    )
    markup = None
    if markup_format == "html":
        from mtrain.insight.markup import MarkupTranslator

        markup = MarkupTranslator(engine, "html")
    report = robustness_report(engine.translate, sources, references, engine.info.get("tgt_lang"), seed, markup)
    print(json.dumps(report) if json_output else report_table(report))

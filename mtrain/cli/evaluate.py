"""`mtrain eval-bleu`: score a hypothesis file (or translate first) against references with
sacreBLEU, and with `--baseline` test whether the difference to another system is significant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

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

PaperBleuOption = typer.Option(
    False, "--paper-bleu", help="Also report the paper's tokenized BLEU with compound splitting."
)
BaselineOption = typer.Option(
    None,
    "--baseline",
    metavar="FILE",
    help="Another system's translations of the same source: also test whether the two differ significantly "
    "(sacreBLEU's paired bootstrap, 1000 resamples).",
)

ConfidenceOption = typer.Option(
    None,
    "--confidence",
    metavar="FILE",
    help="Also measure a confidence against sentence chrF: FILE is 'mtrain translate --scores' output "
    "(its translations are scored when --hyp is left out) or one number a line.",
)


@command("eval-bleu", short_help="Score translations with sacreBLEU (BLEU and chrF).")
def eval_bleu(
    ref: list[Path] = typer.Option(
        ..., "--ref", "-r", metavar="FILE", help="Reference file (repeat for several references)."
    ),
    hyp: Optional[Path] = typer.Option(None, "--hyp", metavar="FILE", help="Translations to score."),
    checkpoint: Optional[list[Path]] = typer.Option(
        None,
        "--checkpoint",
        metavar="FILE",
        help="Translate --src with this checkpoint, then score (repeat it for an ensemble).",
    ),
    model: Optional[Path] = ModelDirOption,
    src: Optional[Path] = typer.Option(
        None, "--src", metavar="FILE", help="Source file to translate (with --checkpoint or --model)."
    ),
    beam: Optional[int] = BeamOption,
    lenpen: Optional[float] = LenpenOption,
    max_tokens: Optional[int] = MaxTokensOption,
    engine: str = EngineOption,
    quantization: Optional[str] = QuantizationOption,
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    paper_bleu: bool = PaperBleuOption,
    baseline: Optional[Path] = BaselineOption,
    confidence: Optional[Path] = ConfidenceOption,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    tgt_lang: Optional[str] = typer.Option(
        None,
        "--tgt-lang",
        metavar="CODE",
        help="The references' language: zh, ja and ko get sacreBLEU's own tokenizer (default: the model's target); "
        "a multilingual model translates --src into it.",
    ),
) -> None:
    """Score translations with sacreBLEU and chrF (detokenized, with signatures)."""
    options = dict(
        checkpoint=checkpoint,
        model_dir=model,
        engine=engine,
        device=device,
        precision=precision,
        threads=threads,
        quantization=quantization,
        beam=beam,
        lenpen=lenpen,
        max_tokens=max_tokens,
        tgt_lang=tgt_lang,
    )
    translating = bool(checkpoint) or model is not None
    eval_command(
        ref,
        hyp=hyp,
        src=src,
        translator_options=options if translating else None,
        paper_bleu=paper_bleu,
        as_json=json_output,
        baseline=baseline,
        tgt_lang=tgt_lang,
        confidence=confidence,
    )


def read_references(paths: list[Path], count: int | None) -> list[list[str]]:
    refs = []
    for path in paths:
        if not Path(path).is_file():
            raise MtrainError(f"reference file not found: {path}")
        refs.append(read_aligned(Path(path), count, "", "every file must have one line per sentence"))
    return refs


def read_aligned(path: Path, count: int | None, role: str, advice: str) -> list[str]:
    """The lines of `path`, which must be one per translated sentence (`count`, None: any number);
    `role` names the file in the error ("the baseline "), `advice` says how to fix it."""
    lines = read_lines(path)
    if count is not None and len(lines) != count:
        raise MtrainError(
            f"line counts differ: {role}{path} has {len(lines)} lines but the translations have {count}; {advice}"
        )
    return lines


def eval_command(
    ref_paths: list[Path],
    hyp: Path | None = None,
    src: Path | None = None,
    translator_options: dict | None = None,
    paper_bleu: bool = False,
    as_json: bool = False,
    baseline: Path | None = None,
    tgt_lang: str | None = None,
    confidence: Path | None = None,
) -> dict:
    """`mtrain eval-bleu`: score --hyp, or translate --src with a model (`translator_options` for
    `translate.open_engine`: checkpoint or model_dir, engine, beam, ...) and score that; with a
    `baseline` (another system's translations), also test whether the two differ significantly;
    with `confidence` (translate --scores output), measure that confidence against sentence chrF."""
    from mtrain.evaluation.bootstrap import describe_bootstrap, paired_bootstrap
    from mtrain.evaluation.scores import corpus_scores

    if baseline is not None and not baseline.is_file():
        raise MtrainError(f"baseline file not found: {baseline}")
    scored = read_confidences(confidence) if confidence is not None else None
    hyps, tgt_lang = _translations(ref_paths, hyp, src, translator_options, scored, tgt_lang)
    if not hyps:
        raise MtrainError("there is nothing to score: the translations are empty (0 lines)")
    refs = read_references(ref_paths, len(hyps))
    result = corpus_scores(hyps, refs, paper_bleu, tgt_lang)
    if baseline is not None:
        baseline_lines = read_aligned(
            baseline, len(hyps), "the baseline ", "compare two systems' translations of the same source file"
        )
        result.update(paired_bootstrap(hyps, baseline_lines, refs, tgt_lang))
    if scored is not None:
        result["confidence"] = _confidence_report(confidence, scored[1], hyps, refs[0])
    if as_json:
        print(json.dumps(result))
    else:
        print(result["bleu_detail"].split(" = ", 1)[0] + f" = {result['bleu']:.2f}  {result['bleu_signature']}")
        print(f"  {result['bleu_detail']}")
        print(f"chrF2 = {result['chrf']:.2f}  {result['chrf_signature']}")
        if paper_bleu:
            print(f"paper-style tokenized BLEU (13a + compound splitting) = {result['paper_bleu']:.2f}")
        if baseline is not None:
            print(describe_bootstrap(result))
        if scored is not None:
            from mtrain.evaluation.confidence import describe_report

            print("\n".join(describe_report(result["confidence"])))
    return result


def _translations(
    ref_paths: list[Path],
    hyp: Path | None,
    src: Path | None,
    translator_options: dict | None,
    scored: tuple[list[str] | None, list[float]] | None,
    tgt_lang: str | None,
) -> tuple[list[str], str | None]:
    """The translations to score (--hyp, a model's translations of --src, or those of a --confidence
    file) and the target language that picks BLEU's tokenizer."""
    if hyp is None and translator_options is None and scored is not None:
        if scored[0] is None:
            raise MtrainError("the --confidence file holds numbers only; give the translations they score with --hyp")
        return scored[0], tgt_lang  # translate --scores output: its translations
    if (hyp is None) == (translator_options is None):
        raise MtrainError("give either --hyp FILE, or a model (--checkpoint CKPT or --model DIR) with --src FILE")
    if hyp is not None:
        if not Path(hyp).is_file():
            raise MtrainError(f"hypothesis file not found: {hyp}")
        return read_lines(Path(hyp)), tgt_lang
    if src is None or not Path(src).is_file():
        raise MtrainError(f"translating needs an existing --src file (got {src})")
    from mtrain.deploy.engines import open_engine

    lines = read_lines(Path(src))
    read_references(ref_paths, len(lines))  # fail before translating, not after
    engine = open_engine(**translator_options)
    # the model's target language picks BLEU's tokenizer
    return engine.translate(lines), tgt_lang or engine.info.get("tgt_lang")


def read_confidences(path: Path) -> tuple[list[str] | None, list[float]]:
    """The translations and confidences of `mtrain translate --scores` output ('text<TAB>number'), or
    one number a line (then no translations: None)."""
    import math

    if not Path(path).is_file():
        raise MtrainError(f"confidence file not found: {path}")
    texts, values, lines = [], [], read_lines(Path(path))
    for number, line in enumerate(lines, 1):
        text, _, value = line.rpartition("\t")
        try:
            values.append(float(value))
        except ValueError:
            values.append(math.nan)
        if not math.isfinite(values[-1]):
            raise MtrainError(
                f"line {number} of {path} does not end in a number ({value[:40]!r}); give the output of mtrain "
                "translate --scores, or one confidence a line"
            )
        texts.append(text)
    return (texts if any("\t" in line for line in lines) else None), values


def _confidence_report(path: Path, values: list[float], hyps: list[str], refs: list[str]) -> dict:
    from mtrain.evaluation.confidence import confidence_report

    if len(values) != len(hyps):
        raise MtrainError(
            f"line counts differ: {path} has {len(values)} lines but the translations have {len(hyps)}; "
            "give one confidence per translated sentence"
        )
    return confidence_report(values, hyps, refs)

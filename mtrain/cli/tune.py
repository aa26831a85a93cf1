"""`mtrain tune`: decode the validation set of a checkpoint's run over a grid of beam sizes and
length penalties, choose a setting by --rule (mtrain.evaluation.tune), and maybe write it into the
checkpoint. torch and sacreBLEU load inside the functions, so that `mtrain --help` starts at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mtrain.cli.options import DeviceOption, MaxTokensOption, PrecisionOption, TgtLangOption, ThreadsOption
from mtrain.cli.shell import command
from mtrain.errors import MtrainError

if TYPE_CHECKING:
    from mtrain.inference.engine import TranslationEngine

RuleOption = typer.Option(
    "robust",
    metavar="robust|argmax",
    help="robust: of the settings the paired bootstrap cannot tell from the best, the output length "
    "nearest the references', then the smallest length penalty; argmax: the highest BLEU.",
)
HoldoutFractionOption = typer.Option(
    0.0,
    metavar="F",
    show_default=False,
    help="Tune on the rest of the validation set and score the choice and the untuned default on this "
    "share of it, e.g. 0.5 (default: off).",
)


@command(short_help="Choose beam and length penalty on the validation set.")
def tune(
    checkpoint: list[Path] = typer.Option(
        ...,
        "--checkpoint",
        metavar="FILE",
        help="The checkpoint to tune, e.g. runs/demo/checkpoint_avg.pt (repeat it to tune an ensemble).",
    ),
    beam: Optional[str] = typer.Option(
        None, metavar="B1,B2,...", help="Beam sizes to try, e.g. 4,5,6 (default: the checkpoint's decode.beam)."
    ),
    lenpen: str = typer.Option(
        "0.4:2.0:0.2", metavar="START:STOP:STEP | A1,A2,...", help="Length penalties to try (STOP included)."
    ),
    src: Optional[Path] = typer.Option(
        None, metavar="FILE", help="Validation sources (default: the run's prepared data/valid.<src>.txt)."
    ),
    ref: Optional[Path] = typer.Option(
        None, metavar="FILE", help="Validation references (default: the run's prepared data/valid.<tgt>.txt)."
    ),
    write: bool = typer.Option(
        False, "--write", help="Store the chosen beam and length penalty in the checkpoint's decode settings."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="FILE", help="With --write: write a tuned copy here instead of in place."
    ),
    rule: str = RuleOption,
    holdout_fraction: float = HoldoutFractionOption,
    tgt_lang: Optional[str] = TgtLangOption,
    max_tokens: Optional[int] = MaxTokensOption,
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
) -> None:
    """Choose beam size and length penalty on the validation set: a table of BLEU, chrF, brevity
    penalty and time per setting, the choice of --rule; --write makes it the checkpoint's default."""
    from mtrain.deploy.engines import open_engine

    tune_command(
        checkpoint,
        translator_factory=lambda: open_engine(
            checkpoint, None, "torch", device, precision, threads, max_tokens=max_tokens, tgt_lang=tgt_lang
        ),
        beams=beam,
        lenpens=lenpen,
        src=src,
        ref=ref,
        write=write,
        output=output,
        echo=typer.echo,
        rule=rule,
        holdout_fraction=holdout_fraction,
        tgt_lang=tgt_lang,
    )


def tune_command(
    checkpoint_paths: list[Path],
    *,
    translator_factory: Callable[[], TranslationEngine],
    beams: str | None = None,
    lenpens: str = "0.4:2.0:0.2",
    src: Path | None = None,
    ref: Path | None = None,
    write: bool = False,
    output: Path | None = None,
    echo: Callable[[str], object] = print,
    rule: str = "robust",
    holdout_fraction: float = 0.0,
    tgt_lang: str | None = None,
) -> dict:
    """`mtrain tune`: the grid on the validation set, a table, the choice of `rule`, and maybe the
    chosen setting written. Several checkpoints are tuned as one ensemble, on the first one's
    validation data. With `holdout_fraction`, that share of the validation set is left out of the
    choice, and the chosen setting and the untuned default are both scored on it."""
    from mtrain.device import keep_freed_memory
    from mtrain.evaluation import tune as tuning

    _check_options(checkpoint_paths, write, output, rule)
    lenpen_grid = tuning.parse_lenpens(lenpens)
    sources, references, src_path = tuning.validation_set(checkpoint_paths[0], src, ref, tgt_lang)
    tuned, held = (
        tuning.holdout_split(len(sources), holdout_fraction) if holdout_fraction else (range(len(sources)), [])
    )
    keep_freed_memory()  # a batch job that decodes the set once per setting
    translator = translator_factory()
    default = {"beam": translator.config.beam, "lenpen": translator.config.lenpen}
    beam_grid = tuning.parse_beams(beams) if beams else [translator.config.beam]
    tune_src, tune_ref = [sources[i] for i in tuned], [references[i] for i in tuned]
    echo(f"tuning on {src_path} ({len(tune_src)} sentences): {len(beam_grid) * len(lenpen_grid)} settings")
    echo(tuning.HEADER)
    tgt_lang = tgt_lang or translator.info.get("tgt_lang")  # the target language picks BLEU's tokenizer
    rows, outputs, results = tuning.tune(
        translator, tune_src, tune_ref, beam_grid, lenpen_grid, lambda row: echo(tuning.format_row(row)), tgt_lang
    )
    chosen, tied = tuning.choose(rows, outputs, tune_ref, rule, tgt_lang)
    for line in tuning.explain_choice(chosen, tied, tuning.best_row(rows), rule):
        echo(line)
    echo(f"chosen: beam {chosen['beam']}, lenpen {chosen['lenpen']:g} ({tuning.describe_scores(chosen)})")
    for note in tuning.edge_notes(chosen, beam_grid, lenpen_grid):
        echo(note)
    result = {"rows": rows, "best": chosen, "tied": tied}
    if held:
        result["holdout"] = tuning.held_out_report(
            translator, [sources[i] for i in held], [references[i] for i in held], chosen, default, tgt_lang
        )
        echo(tuning.describe_held_out(result["holdout"]))
    result["confidence"] = _calibrate(translator, results[rows.index(chosen)], tune_src, tune_ref, echo)
    if write:
        target = tuning.write_setting(checkpoint_paths[0], chosen, output, result["confidence"])
        echo(f"wrote decode.beam={chosen['beam']} decode.lenpen={chosen['lenpen']:g} into {target}")
    return result


def _calibrate(
    translator: TranslationEngine, found: list, sources: list[str], references: list[str], echo: Callable
) -> dict | None:
    """The confidence calibration fitted on the chosen setting's translations (evaluation/confidence.py)."""
    from mtrain.evaluation.confidence import MIN_SENTENCES, calibrate

    calibration = calibrate(translator, sources, references, found)
    if calibration is None:
        echo(f"confidence: not calibrated (fewer than {MIN_SENTENCES} non-empty validation sentences)")
    else:
        echo(
            f"confidence: calibrated on {calibration['sentences']} sentences (Spearman with sentence chrF "
            f"{calibration['spearman']:.3f} on them)"
        )
    return calibration


def _check_options(checkpoint_paths: list[Path], write: bool, output: Path | None, rule: str) -> None:
    if output is not None and not write:
        raise MtrainError("--output names where --write puts the tuned checkpoint; add --write")
    if write and len(checkpoint_paths) > 1:
        raise MtrainError(
            "--write stores the setting in one checkpoint, but an ensemble has several; leave out --write "
            "and pass the best --beam and --lenpen to mtrain translate"
        )
    from mtrain.evaluation.tune import RULES

    if rule not in RULES:
        raise MtrainError(f"--rule '{rule}' is not one of {', '.join(RULES)}")

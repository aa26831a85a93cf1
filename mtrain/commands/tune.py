"""`mtrain tune`: decode the validation set of a checkpoint's run over a grid of beam sizes and
length penalties, print a row per setting, and with `--write` store the best in the checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from mtrain.config_io import decode_config
from mtrain.data.sources import read_lines
from mtrain.device import keep_freed_memory
from mtrain.errors import MtrainError
from mtrain.evaluation.bootstrap import paired_bootstrap
from mtrain.evaluation.scores import corpus_scores
from mtrain.evaluation.tune import (
    HEADER,
    RULES,
    SIGNIFICANCE,
    best_row,
    choose,
    edge_notes,
    explain_choice,
    format_row,
    holdout_split,
    parse_beams,
    parse_lenpens,
    tune,
)
from mtrain.files import disk_errors
from mtrain.inference.engine import TranslationEngine
from mtrain.run import checkpoint
from mtrain.run.directory import prepared_data_dir


def validation_files(checkpoint_path: Path, src: Path | None, ref: Path | None) -> tuple[Path, Path]:
    """--src/--ref, or the validation text of the checkpoint's prepared data (data.dir, or its run's data/)."""
    if src is not None or ref is not None:
        if src is None or ref is None:
            raise MtrainError("give both --src and --ref (the validation sources and references), or neither")
        found = (Path(src), Path(ref))
    else:
        config = checkpoint.load(checkpoint_path)["config"]
        data = prepared_data_dir(config, Path(checkpoint_path).parent)
        found = tuple(data / f"valid.{config['data'][side]}.txt" for side in ("src_lang", "tgt_lang"))
    for path in found:
        if not path.is_file():
            raise MtrainError(
                f"no validation data: {path} not found; give --src FILE --ref FILE (the validation set; "
                "never tune on the test set)"
            )
    return found


def write_setting(checkpoint_path: Path, row: dict, output: Path | None) -> Path:
    """Store the chosen beam and length penalty as the checkpoint's decode settings (atomically),
    in place or in a copy at `output`."""
    state = checkpoint.load(checkpoint_path)
    decode = decode_config(state["config"]["decode"], beam=row["beam"], lenpen=row["lenpen"])  # checked as a config is
    state["config"]["decode"] = dataclasses.asdict(decode)
    target = Path(output) if output is not None else Path(checkpoint_path)
    if target.is_dir():
        raise MtrainError(f"--output {target} is a directory; give a file name")
    with disk_errors(f"writing {target}", "the checkpoint tuned is intact; free space and tune again"):
        checkpoint.save(state, target)
    return target


def tune_command(
    checkpoint_paths: list[Path],
    beams: str | None,
    lenpens: str,
    src: Path | None,
    ref: Path | None,
    write: bool,
    output: Path | None,
    translator_factory: Callable[[], TranslationEngine],
    echo: Callable[[str], object] = print,
    rule: str = "robust",
    holdout_fraction: float = 0.0,
) -> dict:
    """`mtrain tune`: the grid on the validation set, a table, the choice of `rule`, and maybe the
    chosen setting written. Several checkpoints are tuned as one ensemble, on the first one's
    validation data. With `holdout_fraction`, that share of the validation set is left out of the
    choice, and the chosen setting and the untuned default are both scored on it."""
    _check_options(checkpoint_paths, write, output, rule)
    lenpen_grid = parse_lenpens(lenpens)
    sources, references, src_path = _validation(checkpoint_paths[0], src, ref)
    tuned, held = holdout_split(len(sources), holdout_fraction) if holdout_fraction else (range(len(sources)), [])
    keep_freed_memory()  # a batch job that decodes the set once per setting
    translator = translator_factory()
    default = {"beam": translator.config.beam, "lenpen": translator.config.lenpen}
    beam_grid = parse_beams(beams) if beams else [translator.config.beam]
    tune_src, tune_ref = [sources[i] for i in tuned], [references[i] for i in tuned]
    echo(f"tuning on {src_path} ({len(tune_src)} sentences): {len(beam_grid) * len(lenpen_grid)} settings")
    echo(HEADER)
    tgt_lang = checkpoint.load(checkpoint_paths[0])["config"]["data"]["tgt_lang"]  # BLEU's tokenizer for it
    rows, outputs = tune(
        translator, tune_src, tune_ref, beam_grid, lenpen_grid, lambda row: echo(format_row(row)), tgt_lang
    )
    chosen, tied = choose(rows, outputs, tune_ref, rule, tgt_lang)
    for line in explain_choice(chosen, tied, best_row(rows), rule):
        echo(line)
    echo(f"chosen: beam {chosen['beam']}, lenpen {chosen['lenpen']:g} ({_scores(chosen)})")
    for note in edge_notes(chosen, beam_grid, lenpen_grid):
        echo(note)
    result = {"rows": rows, "best": chosen, "tied": tied}
    if held:
        result["holdout"] = _holdout(
            translator, [sources[i] for i in held], [references[i] for i in held], chosen, default, tgt_lang
        )
        echo(_describe_holdout(result["holdout"]))
    if write:
        target = write_setting(checkpoint_paths[0], chosen, output)
        echo(f"wrote decode.beam={chosen['beam']} decode.lenpen={chosen['lenpen']:g} into {target}")
    return result


def _check_options(checkpoint_paths: list[Path], write: bool, output: Path | None, rule: str) -> None:
    if output is not None and not write:
        raise MtrainError("--output names where --write puts the tuned checkpoint; add --write")
    if write and len(checkpoint_paths) > 1:
        raise MtrainError(
            "--write stores the setting in one checkpoint, but an ensemble has several; leave out --write "
            "and pass the best --beam and --lenpen to mtrain translate"
        )
    if rule not in RULES:
        raise MtrainError(f"--rule '{rule}' is not one of {', '.join(RULES)}")


def _validation(checkpoint_path: Path, src: Path | None, ref: Path | None) -> tuple[list[str], list[str], Path]:
    src_path, ref_path = validation_files(checkpoint_path, src, ref)
    sources, references = read_lines(src_path), read_lines(ref_path)
    if len(sources) != len(references) or not sources:
        raise MtrainError(
            f"{src_path} has {len(sources)} lines and {ref_path} {len(references)}; they must be the same, non-zero"
        )
    return sources, references, src_path


def _holdout(
    translator: TranslationEngine,
    sources: list[str],
    references: list[str],
    chosen: dict,
    default: dict,
    tgt_lang: str | None = None,
) -> dict:
    """BLEU, chrF and length ratio of the chosen and the default setting on the held-out sentences,
    and the paired bootstrap p-value of their BLEU difference (sacreBLEU's, as eval-bleu --baseline)."""
    report: dict = {"sentences": len(sources)}
    outputs = {}
    for name, setting in (("chosen", chosen), ("default", default)):
        translator.config = dataclasses.replace(translator.config, beam=setting["beam"], lenpen=setting["lenpen"])
        outputs[name] = translator.translate(sources, beam=setting["beam"])
        scores = corpus_scores(outputs[name], [references], tgt_lang=tgt_lang)
        report[name] = {key: setting[key] for key in ("beam", "lenpen")} | {
            key: scores[key] for key in ("bleu", "chrf", "length_ratio")
        }
    same = outputs["chosen"] == outputs["default"]
    report["bleu_p_value"] = (
        1.0 if same else paired_bootstrap(outputs["chosen"], outputs["default"], [references], tgt_lang)["bleu_p_value"]
    )
    return report


def _describe_holdout(report: dict) -> str:
    chosen, default = report["chosen"], report["default"]
    delta, p = chosen["bleu"] - default["bleu"], report["bleu_p_value"]
    verdict = "no difference" if delta == 0 else "significant" if p < SIGNIFICANCE else "not significant"
    return (
        f"held out ({report['sentences']} sentences, not used for the choice): chosen beam {chosen['beam']} lenpen "
        f"{chosen['lenpen']:g} ({_scores(chosen)}); the checkpoint's own setting beam {default['beam']} lenpen "
        f"{default['lenpen']:g} ({_scores(default)}); {delta:+.2f} BLEU, p = {p:.4f} (paired bootstrap): {verdict} "
        f"at p < {SIGNIFICANCE:g}"
    )


def _scores(row: dict) -> str:
    return f"BLEU {row['bleu']:.2f}, chrF {row['chrf']:.2f}, length ratio {row['length_ratio']:.3f}"

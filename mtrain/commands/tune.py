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
from mtrain.evaluation.tune import HEADER, best_row, edge_notes, format_row, parse_beams, parse_lenpens, tune
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
) -> dict:
    """`mtrain tune`: the grid on the validation set, a table, and maybe the best setting written.
    Several checkpoints are tuned as one ensemble, on the first one's validation data."""
    if output is not None and not write:
        raise MtrainError("--output names where --write puts the tuned checkpoint; add --write")
    if write and len(checkpoint_paths) > 1:
        raise MtrainError(
            "--write stores the setting in one checkpoint, but an ensemble has several; leave out --write "
            "and pass the best --beam and --lenpen to mtrain translate"
        )
    lenpen_grid = parse_lenpens(lenpens)
    src_path, ref_path = validation_files(checkpoint_paths[0], src, ref)
    sources, references = read_lines(src_path), read_lines(ref_path)
    if len(sources) != len(references) or not sources:
        raise MtrainError(
            f"{src_path} has {len(sources)} lines and {ref_path} {len(references)}; they must be the same, non-zero"
        )
    keep_freed_memory()  # a batch job that decodes the set once per setting
    translator = translator_factory()
    beam_grid = parse_beams(beams) if beams else [translator.config.beam]
    echo(f"tuning on {src_path} ({len(sources)} sentences): {len(beam_grid) * len(lenpen_grid)} settings")
    echo(HEADER)
    rows = tune(translator, sources, references, beam_grid, lenpen_grid, progress=lambda row: echo(format_row(row)))
    best = best_row(rows)
    echo(f"best: beam {best['beam']}, lenpen {best['lenpen']:g} (BLEU {best['bleu']:.2f}, chrF {best['chrf']:.2f})")
    for note in edge_notes(best, beam_grid, lenpen_grid):
        echo(note)
    if write:
        target = write_setting(checkpoint_paths[0], best, output)
        echo(f"wrote decode.beam={best['beam']} decode.lenpen={best['lenpen']:g} into {target}")
    return {"rows": rows, "best": best}

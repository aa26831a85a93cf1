"""`mtrain tune`: choose the beam size and length penalty on the validation set.

The length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, used by the paper's
section 6.1 with alpha 0.6) trades the search's bias towards short outputs against BLEU's
brevity penalty; the best alpha differs between language pairs and models, and the paper
chose its own on the development set. This decodes the validation sources for every setting
of a grid, scores each with sacreBLEU, and can store the best setting in the checkpoint, so
`mtrain translate` uses it without flags. The test set is never used here.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from mtrain import checkpoint
from mtrain.data.sources import read_lines
from mtrain.device import keep_freed_memory
from mtrain.errors import MtrainError
from mtrain.evaluate import corpus_scores


def parse_beams(text: str) -> list[int]:
    """'4,5,6' -> [4, 5, 6]."""
    try:
        beams = [int(part) for part in text.split(",")]
    except ValueError:
        beams = []
    if not beams or min(beams) < 1:
        raise MtrainError(f"--beam '{text}': expected beam sizes >= 1 separated by commas, e.g. 4,5,6")
    return beams


def parse_lenpens(text: str) -> list[float]:
    """'0.4:1.4:0.1' (start:stop:step, stop included) or '0.6,1.0' -> the values."""
    try:
        if ":" in text:
            start, stop, step = (float(part) for part in text.split(":"))
            if not 0 <= start <= stop or step <= 0 or (stop - start) / step > 1000:
                raise ValueError
            count = int(round((stop - start) / step)) + 1
            values = [round(start + i * step, 6) for i in range(count) if start + i * step <= stop + 1e-9]
        else:
            values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise MtrainError(
            f"--lenpen '{text}': expected START:STOP:STEP with 0 <= START <= STOP and STEP > 0 (e.g. 0.4:1.4:0.1), "
            "or values >= 0 separated by commas (e.g. 0.6,1.0)"
        )
    return values


def validation_files(checkpoint_path: Path, src: Path | None, ref: Path | None) -> tuple[Path, Path]:
    """--src/--ref, or the validation text prepared in the checkpoint's run directory."""
    if src is not None or ref is not None:
        if src is None or ref is None:
            raise MtrainError("give both --src and --ref (the validation sources and references), or neither")
        found = (Path(src), Path(ref))
    else:
        config = checkpoint.load(checkpoint_path)["config"]
        data = Path(checkpoint_path).parent / "data"
        found = tuple(data / f"valid.{config['data'][side]}.txt" for side in ("src_lang", "tgt_lang"))
    for path in found:
        if not path.is_file():
            raise MtrainError(
                f"no validation data: {path} not found; give --src FILE --ref FILE (the validation set; "
                "never tune on the test set)"
            )
    return found


def tune(translator, sources: list[str], references: list[str], beams: list[int], lenpens: list[float], progress=None):
    """One row per (beam, lenpen): BLEU, chrF, brevity penalty, length ratio and decoding seconds."""
    rows = []
    for beam in beams:
        for lenpen in lenpens:
            translator.config = dataclasses.replace(translator.config, beam=beam, lenpen=lenpen)
            start = time.perf_counter()
            hyps = translator.translate(sources, beam=beam)
            seconds = time.perf_counter() - start
            scores = corpus_scores(hyps, [references])
            rows.append(
                {
                    "beam": beam,
                    "lenpen": lenpen,
                    "bleu": scores["bleu"],
                    "chrf": scores["chrf"],
                    "brevity_penalty": scores["brevity_penalty"],
                    "length_ratio": scores["length_ratio"],
                    "seconds": seconds,
                }
            )
            if progress is not None:
                progress(rows[-1])
    return rows


def best_row(rows: list[dict]) -> dict:
    """The highest BLEU; among equals the higher chrF, then the earlier setting of the grid."""
    return max(rows, key=lambda row: (round(row["bleu"], 6), round(row["chrf"], 6), -rows.index(row)))


def format_row(row: dict) -> str:
    return (
        f"{row['beam']:>4}  {row['lenpen']:>6.2f}  {row['bleu']:>6.2f}  {row['chrf']:>6.2f}  "
        f"{row['brevity_penalty']:>5.3f}  {row['length_ratio']:>5.3f}  {row['seconds']:>7.1f}"
    )


def edge_notes(best: dict, beams: list[int], lenpens: list[float]) -> list[str]:
    """Hints when the best setting lies on the border of a grid: the optimum may lie beyond it.

    A border value that wins only says the search stopped there; widen that axis before trusting it
    (or keep it, knowing that the scores were flat there, as they often are)."""
    notes = []
    for name, grid, floor in (("beam", beams, 1), ("lenpen", lenpens, 0)):
        value = best[name]
        if len(grid) > 1 and value in (min(grid), max(grid)) and value != floor:
            side = "largest" if value == max(grid) else "smallest"
            notes.append(f"note: the best {name} {value:g} is the {side} in the grid; widen --{name} to look beyond it")
    return notes


HEADER = "beam  lenpen    BLEU    chrF     BP  ratio  seconds"


def write_setting(checkpoint_path: Path, row: dict, output: Path | None) -> Path:
    """Store the chosen beam and length penalty as the checkpoint's decode settings (atomically),
    in place or in a copy at `output`."""
    state = checkpoint.load(checkpoint_path)
    state["config"]["decode"] = {**state["config"]["decode"], "beam": row["beam"], "lenpen": row["lenpen"]}
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
    translator_factory,
    echo=print,
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

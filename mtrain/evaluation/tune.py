"""Choosing the beam size and length penalty on the validation set (`mtrain tune`).

The length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, used by the paper's
section 6.1 with alpha 0.6) trades the search's bias towards short outputs against BLEU's
brevity penalty; the best alpha differs between language pairs and models, and the paper
chose its own on the development set. This decodes the validation sources for every setting
of a grid and scores each with sacreBLEU; commands/tune.py can store the best setting in the
checkpoint, so `mtrain translate` uses it without flags. The test set is never used here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

from mtrain.errors import MtrainError
from mtrain.evaluation.scores import corpus_scores
from mtrain.inference.engine import TranslationEngine


def parse_beams(text: str) -> list[int]:
    """'4,5,6' -> [4, 5, 6]."""
    try:
        beams = [int(part) for part in text.split(",")]
    except ValueError:
        beams = []
    if not beams or min(beams) < 1:
        raise MtrainError(f"--beam '{text}': expected beam sizes >= 1 separated by commas, e.g. 4,5,6")
    return beams


MAX_LENPEN = 10.0  # ((5 + |Y|) / 6) ** 10 already favours length beyond any use


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
    if not values or not all(math.isfinite(v) and 0 <= v <= MAX_LENPEN for v in values):
        raise MtrainError(
            f"--lenpen '{text}': expected START:STOP:STEP with 0 <= START <= STOP <= {MAX_LENPEN:g} and STEP > 0 "
            f"(e.g. 0.4:1.4:0.1), or values from 0 to {MAX_LENPEN:g} separated by commas (e.g. 0.6,1.0)"
        )
    return values


def tune(
    translator: TranslationEngine,
    sources: list[str],
    references: list[str],
    beams: list[int],
    lenpens: list[float],
    progress: Callable[[dict], object] | None = None,
) -> list[dict]:
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

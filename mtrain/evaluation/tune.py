"""Choosing the beam size and length penalty on the validation set (`mtrain tune`).

The length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, used by the paper's
section 6.1 with alpha 0.6) trades the search's bias towards short outputs against BLEU's
brevity penalty; the best alpha differs between language pairs and models, and the paper
chose its own on the development set. This decodes the validation sources for every setting
of a grid and scores each with sacreBLEU; `write_setting` stores the chosen setting in the
checkpoint, so `mtrain translate` uses it without flags. The test set is never used here.

On a validation set of a thousand sentences many settings score within the bootstrap's noise of
each other, so the plain argmax is often noise that lands on the grid's edge and does not carry
over to unseen data. The robust rule (the default) takes the settings whose BLEU the paired
bootstrap cannot tell from the best's, and among them the one whose output length is closest to
the references' (length ratio nearest 1), then the smallest length penalty and beam.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

from mtrain.config_checks import MAX_BEAM, MAX_LENPEN
from mtrain.config_io import decode_config
from mtrain.data.languages import canonical
from mtrain.data.sources import read_lines
from mtrain.data.store import PreparedData, read_manifest
from mtrain.errors import MtrainError
from mtrain.evaluation.bootstrap import (
    BOOTSTRAP_SAMPLES,
    p_values,
    paired_bootstrap,
    resample_indices,
    sentence_statistics,
)
from mtrain.evaluation.scores import corpus_scores
from mtrain.files import disk_errors
from mtrain.inference.engine import TranslationEngine
from mtrain.inference.search import Hypothesis
from mtrain.run import checkpoint
from mtrain.run.directory import prepared_data_dir


def parse_beams(text: str) -> list[int]:
    """'4,5,6' -> [4, 5, 6]."""
    try:
        beams = [int(part) for part in text.split(",")]
    except ValueError:
        beams = []
    if not beams or min(beams) < 1 or max(beams) > MAX_BEAM:
        raise MtrainError(f"--beam '{text}': expected beam sizes from 1 to {MAX_BEAM} separated by commas, e.g. 4,5,6")
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
    tgt_lang: str | None = None,
) -> tuple[list[dict], list[list[str]], list[list[list[Hypothesis]]]]:
    """One row per (beam, lenpen): BLEU, chrF, brevity penalty, length ratio and decoding seconds;
    each setting's translations, for the bootstrap; and its hypotheses (the confidence calibration
    of the chosen one reads their token log-probabilities)."""
    rows, outputs, results = [], [], []
    for beam in beams:
        for lenpen in lenpens:
            translator.config = dataclasses.replace(translator.config, beam=beam, lenpen=lenpen)
            start = time.perf_counter()
            found = translator.translate_nbest(sources, beam=beam)
            hyps = [translator.tokenizer.decode_tgt(best[0].tokens) for best in found]
            seconds = time.perf_counter() - start
            outputs.append(hyps)
            results.append(found)
            scores = corpus_scores(hyps, [references], tgt_lang=tgt_lang)
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
    return rows, outputs, results


def best_row(rows: list[dict]) -> dict:
    """The highest BLEU; among equals the higher chrF, then the earlier setting of the grid."""
    return max(rows, key=lambda row: (round(row["bleu"], 6), round(row["chrf"], 6), -rows.index(row)))


RULES = ("robust", "argmax")
SIGNIFICANCE = 0.05  # the best is better than a setting when their paired bootstrap p-value is below it


def robust_choice(rows: list[dict], p: list[float]) -> tuple[dict, list[dict]]:
    """The chosen row and the tied set: the rows whose difference from the best has a paired
    bootstrap p-value (`p`) of 0.05 or more; among them the output length nearest the references',
    then the smallest length penalty, then the smallest beam."""
    tied = [row for row, value in zip(rows, p) if value >= SIGNIFICANCE]
    return min(tied, key=lambda row: (abs(row["length_ratio"] - 1.0), row["lenpen"], row["beam"])), tied


def choose(
    rows: list[dict], outputs: list[list[str]], references: list[str], rule: str, tgt_lang: str | None = None
) -> tuple[dict, list[dict]]:
    """The setting `rule` picks, with the settings tied with the best (argmax: the best alone)."""
    best = best_row(rows)
    if rule == "argmax":
        return best, [best]
    statistics = [sentence_statistics(hyps, references, tgt_lang) for hyps in outputs]
    return robust_choice(rows, p_values(statistics, rows.index(best), resample_indices(len(references))))


def explain_choice(chosen: dict, tied: list[dict], best: dict, rule: str) -> list[str]:
    """Why the winner won, in a line or two."""
    if rule == "argmax":
        return [f"rule argmax: the highest validation BLEU ({best['bleu']:.2f})"]
    settings = ", ".join(f"beam {r['beam']} lenpen {r['lenpen']:g} (ratio {r['length_ratio']:.3f})" for r in tied)
    lines = [
        f"tied with the best (BLEU {best['bleu']:.2f}; paired bootstrap, {BOOTSTRAP_SAMPLES} resamples, "
        f"p >= {SIGNIFICANCE:.2f}): {settings}"
    ]
    if len(tied) > 1:
        lines.append(
            "rule robust: of these, the output length nearest the references' (ratio nearest 1), "
            "then the smallest length penalty"
        )
    return lines


def holdout_split(sentences: int, fraction: float, seed: int = 1) -> tuple[list[int], list[int]]:
    """Sentence indices to tune on and to hold out (a `fraction` of them, drawn with `seed`; the
    same split on every run)."""
    if not (math.isfinite(fraction) and 0 < fraction < 1):
        raise MtrainError(f"--holdout-fraction must be between 0 and 1 (exclusive), e.g. 0.5; got {fraction}")
    count = round(sentences * fraction)
    if not 1 <= count < sentences:
        raise MtrainError(
            f"--holdout-fraction {fraction:g} of {sentences} sentences leaves none to tune on or to hold out"
        )
    held = sorted(random.Random(seed).sample(range(sentences), count))
    kept = set(held)
    return [i for i in range(sentences) if i not in kept], held


def format_row(row: dict) -> str:
    return (
        f"{row['beam']:>4}  {row['lenpen']:>6.2f}  {row['bleu']:>6.2f}  {row['chrf']:>6.2f}  "
        f"{row['brevity_penalty']:>5.3f}  {row['length_ratio']:>5.3f}  {row['seconds']:>7.1f}"
    )


def edge_notes(chosen: dict, beams: list[int], lenpens: list[float]) -> list[str]:
    """Hints when the chosen setting lies on the border of a grid: the optimum may lie beyond it.

    A border value that wins only says the search stopped there; widen that axis before trusting it
    (or keep it, knowing that the scores were flat there, as they often are)."""
    notes = []
    for name, grid, floor in (("beam", beams, 1), ("lenpen", lenpens, 0)):
        value = chosen[name]
        if len(grid) > 1 and value in (min(grid), max(grid)) and value != floor:
            side = "largest" if value == max(grid) else "smallest"
            notes.append(
                f"note: the chosen {name} {value:g} is the {side} in the grid; widen --{name} to look beyond it"
            )
    return notes


HEADER = "beam  lenpen    BLEU    chrF     BP  ratio  seconds"


def validation_files(
    checkpoint_path: Path, src: Path | None, ref: Path | None, tgt_lang: str | None = None
) -> tuple[Path, Path]:
    """--src/--ref, or the validation text of the checkpoint's prepared data (data.dir, or its run's
    data/): with several language pairs, the pair into `tgt_lang`'s."""
    if src is not None or ref is not None:
        if src is None or ref is None:
            raise MtrainError("give both --src and --ref (the validation sources and references), or neither")
        found = (Path(src), Path(ref))
    else:
        config = checkpoint.load(checkpoint_path)["config"]
        data = prepared_data_dir(config, Path(checkpoint_path).parent)
        name, src_lang, tgt_lang = _validation_split(data, config["data"], tgt_lang)
        found = (data / f"{name}.{src_lang}.txt", data / f"{name}.{tgt_lang}.txt")
    for path in found:
        if not path.is_file():
            raise MtrainError(
                f"no validation data: {path} not found; give --src FILE --ref FILE (the validation set; "
                "never tune on the test set)"
            )
    return found


def _validation_split(data: Path, saved: dict, tgt_lang: str | None) -> tuple[str, str, str]:
    """(split name, source and target language) of the validation set to tune on in the prepared
    `data` (`saved`: the checkpoint's data settings); with several language pairs, the one into
    `tgt_lang` (a decode setting is chosen per pair)."""
    prepared = PreparedData(data) if read_manifest(data) is not None else None
    names = prepared.reference_splits("valid") if prepared is not None else []
    splits = [(name, *prepared.split_langs(name)) for name in names]
    splits = splits or [("valid", saved["src_lang"], saved["tgt_lang"])]  # not prepared: the files it would have
    if len(splits) == 1:
        return splits[0]
    chosen = [split for split in splits if tgt_lang and canonical(split[2]) == canonical(tgt_lang)]
    if not chosen:
        pairs = ", ".join(f"{src}->{tgt}" for _, src, tgt in splits)
        asked = f"--tgt-lang {tgt_lang} is none of them" if tgt_lang else "give --tgt-lang"
        raise MtrainError(f"the model was validated on {pairs}; tune one pair at a time: {asked}")
    return chosen[0]


def write_setting(checkpoint_path: Path, row: dict, output: Path | None, confidence: dict | None = None) -> Path:
    """Store the chosen beam and length penalty as the checkpoint's decode settings (atomically),
    and the confidence calibration fitted with them, in place or in a copy at `output`."""
    state = checkpoint.load(checkpoint_path)
    decode = decode_config(state["config"]["decode"], beam=row["beam"], lenpen=row["lenpen"])  # checked as a config is
    state["config"]["decode"] = dataclasses.asdict(decode)
    state.pop("confidence", None)  # a calibration fitted with other decode settings no longer holds
    if confidence is not None:
        state["confidence"] = confidence
    target = Path(output) if output is not None else Path(checkpoint_path)
    if target.is_dir():
        raise MtrainError(f"--output {target} is a directory; give a file name")
    with disk_errors(f"writing {target}", "the checkpoint tuned is intact; free space and tune again"):
        checkpoint.save(state, target)
    return target


def validation_set(
    checkpoint_path: Path, src: Path | None, ref: Path | None, tgt_lang: str | None = None
) -> tuple[list[str], list[str], Path]:
    """The validation sources and references tune chooses on (of the pair into `tgt_lang`), and the sources' path."""
    src_path, ref_path = validation_files(checkpoint_path, src, ref, tgt_lang)
    sources, references = read_lines(src_path), read_lines(ref_path)
    if len(sources) != len(references) or not sources:
        raise MtrainError(
            f"{src_path} has {len(sources)} lines and {ref_path} {len(references)}; they must be the same, non-zero"
        )
    return sources, references, src_path


def held_out_report(
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


def describe_held_out(report: dict) -> str:
    chosen, default = report["chosen"], report["default"]
    delta, p = chosen["bleu"] - default["bleu"], report["bleu_p_value"]
    verdict = "no difference" if delta == 0 else "significant" if p < SIGNIFICANCE else "not significant"
    return (
        f"held out ({report['sentences']} sentences, not used for the choice): chosen beam {chosen['beam']} "
        f"lenpen {chosen['lenpen']:g} ({describe_scores(chosen)}); the checkpoint's own setting beam "
        f"{default['beam']} lenpen {default['lenpen']:g} ({describe_scores(default)}); {delta:+.2f} BLEU, "
        f"p = {p:.4f} (paired bootstrap): {verdict} at p < {SIGNIFICANCE:g}"
    )


def describe_scores(row: dict) -> str:
    return f"BLEU {row['bleu']:.2f}, chrF {row['chrf']:.2f}, length ratio {row['length_ratio']:.3f}"

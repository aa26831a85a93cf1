"""Does the confidence mean anything? Fitting its calibration on the validation set (`mtrain tune`)
and measuring it against quality on a test set (`mtrain eval-bleu --confidence`).

The calibration is a logistic regression from the confidence features (inference/confidence.py)
to "this sentence's chrF is above the median sentence chrF of the validation set", fitted by
Newton's method with a little L2 regularisation on standardised features; it is a handful of
numbers stored in the checkpoint, so every engine and export applies it the same way.

The measurement asks what a user of the number would: does it rank sentences as their quality
does (Spearman correlation with sentence chrF, the measure of Fomicheva et al., 2020), and does
dropping the least confident sentences leave better translations than dropping as many at
random (corpus chrF of the rest; the random drop averaged over `RANDOM_DROPS` draws)?
"""

from __future__ import annotations

import statistics

import numpy as np
from sacrebleu.metrics import CHRF

from mtrain.errors import MtrainError
from mtrain.inference.confidence import FEATURES, calibrated, features
from mtrain.inference.engine import TranslationEngine
from mtrain.inference.search import Hypothesis

MIN_SENTENCES = 20  # fewer validation sentences fit no calibration worth storing
L2 = 1e-2  # on standardised features: keeps the fit finite when the classes separate
RANDOM_DROPS = 200
DROP_FRACTIONS = (0.1, 0.2)


def sentence_chrf_statistics(hyps: list[str], refs: list[str]) -> np.ndarray:
    """sacreBLEU's chrF statistics of each sentence: summed over a subset they give its corpus chrF."""
    return np.array(CHRF()._extract_corpus_statistics(hyps, [refs]), dtype=np.int64)


def chrf_of(statistics_rows: np.ndarray) -> float:
    """Corpus chrF of the sentences whose statistics are `statistics_rows` (one sentence: its sentence chrF)."""
    return float(CHRF()._compute_score_from_stats(list(statistics_rows.sum(0))).score)


def fit_calibration(rows: list[list[float]], chrf: list[float]) -> dict:
    """The logistic calibration of `FEATURES` rows against sentence chrF above its median."""
    if len(rows) < MIN_SENTENCES:
        raise MtrainError(
            f"a confidence calibration needs at least {MIN_SENTENCES} validation sentences, got {len(rows)}"
        )
    x = np.asarray(rows, dtype=np.float64)
    median = statistics.median(chrf)
    y = (np.asarray(chrf) > median).astype(np.float64)
    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-6)
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.diag([L2] * len(FEATURES) + [0.0]) * len(x)
    for _ in range(50):  # Newton's method (iteratively reweighted least squares)
        p = 1.0 / (1.0 + np.exp(-z @ w))
        gradient = z.T @ (p - y) + penalty @ w
        hessian = z.T @ (z * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return {
        "definition": "P(sentence chrF > median_chrf of the validation set)",
        "features": list(FEATURES),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "weights": w[:-1].tolist(),
        "bias": float(w[-1]),
        "median_chrf": float(median),
        "sentences": len(rows),
    }


def calibrate(
    engine: TranslationEngine, sources: list[str], references: list[str], results: list[list[Hypothesis]]
) -> dict | None:
    """The calibration fitted on `results`, `engine`'s translations of the validation set (None with
    fewer than MIN_SENTENCES sentences), with its in-sample Spearman correlation with sentence chrF
    under "spearman"."""
    engine.score_tokens(sources, results)
    pieces = [len(ids) for ids in engine.tokenizer.encode_src([" ".join(line.split()) for line in sources])]
    kept = [i for i, hyps in enumerate(results) if hyps[0].token_logprobs]  # empty lines tell nothing
    if len(kept) < MIN_SENTENCES:
        return None
    rows = [features(results[i][0].token_logprobs, pieces[i]) for i in kept]
    stats = sentence_chrf_statistics(
        [engine.tokenizer.decode_tgt(results[i][0].tokens) for i in kept], [references[i] for i in kept]
    )
    chrf = [chrf_of(stats[j : j + 1]) for j in range(len(kept))]
    calibration = fit_calibration(rows, chrf)
    calibration["spearman"] = spearman([calibrated(calibration, row) for row in rows], chrf)
    return calibration


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); 0 when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    for value in np.unique(values):  # ties: their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def confidence_report(confidences: list[float], hyps: list[str], refs: list[str], seed: int = 1) -> dict:
    """Spearman correlation of `confidences` with sentence chrF, and corpus chrF after dropping the
    least confident 10% and 20% of the sentences beside dropping as many at random."""
    if not len(confidences) == len(hyps) == len(refs):
        raise MtrainError(
            f"{len(confidences)} confidences for {len(hyps)} translations and {len(refs)} references; "
            "give one per sentence"
        )
    stats = sentence_chrf_statistics(hyps, refs)
    sentence_chrf = [chrf_of(stats[i : i + 1]) for i in range(len(hyps))]
    report = {
        "sentences": len(hyps),
        "spearman": spearman(confidences, sentence_chrf),
        "chrf": chrf_of(stats),
    }
    order = np.argsort(np.asarray(confidences), kind="stable")  # least confident first
    rng = np.random.default_rng(seed)
    for fraction in DROP_FRACTIONS:
        dropped = int(round(fraction * len(hyps)))
        kept = order[dropped:]
        random_chrf = [chrf_of(stats[rng.permutation(len(hyps))[dropped:]]) for _ in range(RANDOM_DROPS)]
        name = f"drop{round(fraction * 100)}"
        report[f"{name}_chrf"] = chrf_of(stats[kept])
        report[f"{name}_random_chrf"] = float(np.mean(random_chrf))
        report[f"{name}_gain"] = report[f"{name}_chrf"] - report[f"{name}_random_chrf"]
    return report


def describe_report(report: dict) -> list[str]:
    """`confidence_report` as lines of text."""
    lines = [
        f"confidence vs sentence chrF ({report['sentences']} sentences): Spearman {report['spearman']:.3f}",
        f"  corpus chrF2 {report['chrf']:.2f}",
    ]
    for fraction in DROP_FRACTIONS:
        name = f"drop{round(fraction * 100)}"
        lines.append(
            f"  without the {round(fraction * 100)}% least confident: chrF2 {report[f'{name}_chrf']:.2f}; "
            f"without {round(fraction * 100)}% at random: {report[f'{name}_random_chrf']:.2f} "
            f"(gain {report[f'{name}_gain']:+.2f})"
        )
    return lines

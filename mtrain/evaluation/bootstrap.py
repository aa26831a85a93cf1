"""Is a difference between two systems real? sacreBLEU's paired bootstrap resampling (Koehn,
2004, "Statistical Significance Tests for Machine Translation Evaluation"), the figures of
`sacrebleu -paired-bs`: BLEU and chrF differences with p-values and 95% intervals; and the same
resampling over per-sentence statistics for many systems at once, which `mtrain tune` uses to
tell which settings are indistinguishable from the best."""

from __future__ import annotations

import logging

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from mtrain.evaluation.scores import bleu_metric

BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default for -paired-bs


def paired_bootstrap(hyps: list[str], baseline: list[str], refs: list[list[str]], tgt_lang: str | None = None) -> dict:
    """Is `hyps` better or worse than `baseline` beyond what the choice of test sentences explains?

    Paired bootstrap resampling (Koehn 2004, "Statistical Significance Tests for Machine Translation
    Evaluation"), run by sacreBLEU: both systems are scored on the same 1000 resampled test sets; the
    p-value is how often the difference could arise by chance, and the 95% interval is the system's
    score's spread over the resamples. On a 1000-sentence test set that spread is often over +-1 BLEU."""
    from sacrebleu.significance import PairedTest

    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # its step-by-step INFO lines are noise here
    metrics = {"bleu": bleu_metric(tgt_lang), "chrf": CHRF()}
    test = PairedTest(
        [("baseline", baseline), ("system", hyps)], metrics, refs, test_type="bs", n_samples=BOOTSTRAP_SAMPLES
    )
    _, results = test()
    report = {"bootstrap_samples": BOOTSTRAP_SAMPLES}
    for name, (base, system) in zip(metrics, (results[key] for key in results if key != "System")):
        report[f"baseline_{name}"] = float(base.score)  # numpy scalars in sacreBLEU's results
        report[f"{name}_delta"] = float(system.score - base.score)
        report[f"{name}_p_value"] = float(system.p_value)
        report[f"{name}_ci95"] = float(system.ci)
    return report


def describe_bootstrap(report: dict) -> str:
    """One line per metric of `report` (the system's scores with `paired_bootstrap`'s): the
    difference, its p-value, and whether it is significant at 0.05."""
    lines = [f"paired bootstrap against --baseline ({report['bootstrap_samples']} resamples):"]
    for name, label in (("bleu", "BLEU"), ("chrf", "chrF2")):
        delta, p = report[f"{name}_delta"], report[f"{name}_p_value"]
        # sacreBLEU counts resamples whose difference is strictly larger, so equal systems get its
        # smallest p-value (1/1001) too: a zero difference is no difference whatever p says.
        verdict = "no difference" if delta == 0 else "significant" if p < 0.05 else "not significant"
        lines.append(
            f"  {label} {report[name]:.2f} vs {report[f'baseline_{name}']:.2f}: {delta:+.2f} "
            f"(p = {p:.4f}: {verdict} at p < 0.05; 95% interval of this system +-{report[f'{name}_ci95']:.2f})"
        )
    return "\n".join(lines)


def sentence_statistics(hyps: list[str], references: list[str], tgt_lang: str | None = None) -> np.ndarray:
    """sacreBLEU's sufficient statistics of each sentence (hypothesis and reference lengths, n-gram
    matches and totals for n = 1..4): summed over any subset of sentences they give that subset's
    corpus BLEU, exactly as `BLEU().corpus_score` computes it."""
    return np.array(bleu_metric(tgt_lang)._extract_corpus_statistics(hyps, [references]), dtype=np.int64)


def resample_indices(sentences: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = 12345) -> np.ndarray:
    """`samples` resampled test sets (sentence indices drawn with replacement), the same for every
    system compared, which is what makes the bootstrap paired (Koehn, 2004)."""
    return np.random.default_rng(seed).choice(sentences, size=(samples, sentences), replace=True)  # sacreBLEU's draw


def resampled_bleu(statistics: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Corpus BLEU of every resampled test set, from per-sentence statistics."""
    bleu = BLEU()
    return np.array([bleu._compute_score_from_stats(list(statistics[rows].sum(0))).score for rows in indices])


def paired_p_value(system: np.ndarray, baseline: np.ndarray, observed: float) -> float:
    """The p-value of an observed BLEU difference between two systems scored on the same resampled
    test sets, as sacreBLEU's paired bootstrap defines it (`sacrebleu.significance`, after multeval):
    the resampled absolute differences, centred on their mean, exceed the observed one in
    (count + 1) / (samples + 1) of the cases. Two-sided. One definition for `tune` and
    `eval-bleu --baseline`; an observed difference of zero is no difference (p = 1)."""
    if observed == 0:
        return 1.0
    differences = np.abs(system - baseline)
    return float((np.sum(differences - differences.mean() > abs(observed)) + 1) / (len(differences) + 1))


def p_values(statistics: list[np.ndarray], best: int, indices: np.ndarray) -> list[float]:
    """For each system, the paired bootstrap p-value of its difference from system `best` (1 for
    `best` itself): below 0.05 `best` is significantly better; at or above, the two are tied."""
    bleu = BLEU()
    full = [bleu._compute_score_from_stats(list(s.sum(0))).score for s in statistics]
    scores = [resampled_bleu(s, indices) for s in statistics]
    return [paired_p_value(scores[i], scores[best], full[best] - full[i]) for i in range(len(statistics))]

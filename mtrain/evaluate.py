"""Scores through sacreBLEU: detokenized BLEU and chrF with their signatures, and the paper's
tokenized BLEU with compound splitting for comparison with older tables.

Nothing here re-implements BLEU: the numbers are sacrebleu's, so they equal what the
`sacrebleu` command prints for the same files. The same holds for the significance test against a
baseline (sacreBLEU's paired bootstrap resampling, `sacrebleu -paired-bs`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from mtrain.data.sources import read_lines
from mtrain.errors import MtrainError

COMPOUND = re.compile(r"(\S)-(\S)")


def corpus_scores(hyps: list[str], refs: list[list[str]], paper_bleu: bool = False) -> dict:
    """BLEU and chrF of `hyps` against one or more reference streams."""
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hyps, refs), chrf.corpus_score(hyps, refs)
    result = {
        "bleu": b.score,
        "bleu_signature": str(bleu.get_signature()),
        "bleu_detail": str(b),
        "brevity_penalty": b.bp,
        "length_ratio": b.sys_len / max(b.ref_len, 1),
        "chrf": c.score,
        "chrf_signature": str(chrf.get_signature()),
    }
    if paper_bleu:
        result["paper_bleu"] = paper_style_bleu(hyps, refs)
    return result


def paper_style_bleu(hyps: list[str], refs: list[list[str]]) -> float:
    """Tokenized BLEU as reported in Vaswani et al. (tensor2tensor's get_ende_bleu.sh): text
    tokenized (here with sacrebleu's 13a tokenizer, close to Moses'), compounds split at
    hyphens ("a-b" -> "a ##AT##-##AT## b"), then plain BLEU on tokens. Not comparable with
    detokenized sacreBLEU; use it only beside older papers' numbers."""
    tokenizer = Tokenizer13a()

    def split(line: str) -> str:
        return COMPOUND.sub(r"\1 ##AT##-##AT## \2", tokenizer(line))

    return (
        BLEU(tokenize="none", force=True)
        .corpus_score([split(h) for h in hyps], [[split(r) for r in ref] for ref in refs])
        .score
    )


BOOTSTRAP_SAMPLES = 1000  # sacreBLEU's default for -paired-bs


def paired_bootstrap(hyps: list[str], baseline: list[str], refs: list[list[str]]) -> dict:
    """Is `hyps` better or worse than `baseline` beyond what the choice of test sentences explains?

    Paired bootstrap resampling (Koehn 2004, "Statistical Significance Tests for Machine Translation
    Evaluation"), run by sacreBLEU: both systems are scored on the same 1000 resampled test sets; the
    p-value is how often the difference could arise by chance, and the 95% interval is the system's
    score's spread over the resamples. On a 1000-sentence test set that spread is often over +-1 BLEU."""
    from sacrebleu.significance import PairedTest

    logging.getLogger("sacrebleu").setLevel(logging.WARNING)  # its step-by-step INFO lines are noise here
    metrics = {"bleu": BLEU(), "chrf": CHRF()}
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
) -> dict:
    """`mtrain eval-bleu`: score --hyp, or translate --src with a model (`translator_options` for
    `translate.open_engine`: checkpoint or model_dir, engine, beam, ...) and score that; with a
    `baseline` (another system's translations), also test whether the two differ significantly."""
    if (hyp is None) == (translator_options is None):
        raise MtrainError("give either --hyp FILE, or a model (--checkpoint CKPT or --model DIR) with --src FILE")
    if baseline is not None and not baseline.is_file():
        raise MtrainError(f"baseline file not found: {baseline}")
    if hyp is not None:
        if not Path(hyp).is_file():
            raise MtrainError(f"hypothesis file not found: {hyp}")
        hyps = read_lines(Path(hyp))
    else:
        if src is None or not Path(src).is_file():
            raise MtrainError(f"translating needs an existing --src file (got {src})")
        from mtrain.translate import open_engine

        lines = read_lines(Path(src))
        read_references(ref_paths, len(lines))  # fail before translating, not after
        hyps = open_engine(**translator_options).translate(lines)
    if not hyps:
        raise MtrainError("there is nothing to score: the translations are empty (0 lines)")
    refs = read_references(ref_paths, len(hyps))
    result = corpus_scores(hyps, refs, paper_bleu)
    if baseline is not None:
        baseline_lines = read_aligned(
            baseline, len(hyps), "the baseline ", "compare two systems' translations of the same source file"
        )
        result.update(paired_bootstrap(hyps, baseline_lines, refs))
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
    return result

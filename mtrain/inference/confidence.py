"""How sure the model is of a translation: a confidence per sentence and per word, from the
token log-probabilities the search computes anyway.

Fomicheva et al. (2020), "Unsupervised Quality Estimation for Neural Machine Translation", found
that a model's own probabilities predict the quality of its output without any reference or
quality-labelled data: the mean token log-probability of the output ("TP"), its least probable
token, and, strongest at N times the cost, the same probability under Monte Carlo dropout (N
forward passes with dropout on: "D-TP"). mtrain's sentence confidence is, by default:

- with a calibration in the checkpoint (`mtrain tune --write` fits one on the validation set,
  evaluation/confidence.py): the probability that the sentence's chrF is above the median chrF of
  the validation set's sentences, from a logistic regression on `FEATURES`;
- without one: exp(mean token log-probability), the geometric mean of the output tokens'
  probabilities (</s> included);
- with MC dropout (`translate --mc-dropout N`): the mean over N dropout passes of that geometric
  mean (D-TP), uncalibrated.

A word's confidence is the geometric mean probability of its subword pieces: where the model hesitated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from mtrain.data.tokenizer import Tokenizer, word_numbers
from mtrain.device import autocast_context
from mtrain.errors import MtrainError
from mtrain.inference.engine import TranslationEngine
from mtrain.inference.ensemble import Ensemble
from mtrain.inference.search import Hypothesis
from mtrain.inference.translator import Translator, encode_sources
from mtrain.model.transformer import Transformer
from mtrain.special import BOS, EOS, PAD

# What the calibration's logistic regression reads, in this order. The length ratio is the output's
# pieces (with </s>) over the source's (with </s>), on a log scale; its square lets the regression
# distrust outputs much shorter and much longer than usual alike.
FEATURES = ("mean_logprob", "min_logprob", "log_length_ratio", "log_length_ratio_squared")
MEANING = {
    "calibrated": "the probability that this translation's chrF is above the median of the validation set's "
    "(a logistic calibration mtrain tune fitted)",
    "uncalibrated": "the geometric mean of the output tokens' probabilities (no calibration in the checkpoint: "
    "mtrain tune --write fits one)",
    "mc_dropout": "the mean over the Monte Carlo dropout passes of the geometric mean token probability (D-TP)",
}
SCORING_TOKENS = 8192  # target tokens per teacher-forced batch of the dropout passes


def features(token_logprobs: list[float], source_pieces: int) -> list[float]:
    """`FEATURES` of one output from its tokens' log-probabilities (</s>'s last) and its source's length
    in pieces (without </s>)."""
    ratio = math.log(len(token_logprobs) / (source_pieces + 1))
    return [sum(token_logprobs) / len(token_logprobs), min(token_logprobs), ratio, ratio * ratio]


def calibrated(calibration: dict, values: list[float]) -> float:
    """The logistic regression's probability for one sentence's `features`."""
    z = calibration["bias"] + sum(
        w * (x - m) / s for w, x, m, s in zip(calibration["weights"], values, calibration["mean"], calibration["scale"])
    )
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def sentence_confidence(token_logprobs: list[float], source_pieces: int, calibration: dict | None) -> float:
    """The default confidence in [0, 1] (module docstring): calibrated when the model has a calibration."""
    if not token_logprobs:  # an empty line's empty translation
        return 1.0
    values = features(token_logprobs, source_pieces)
    return calibrated(calibration, values) if calibration else math.exp(values[0])


def word_confidences(tokenizer: Tokenizer, hypothesis: Hypothesis) -> list[dict]:
    """The output's words (sentencepiece's: a piece starting with "▁" starts one) with the geometric
    mean probability of their pieces."""
    numbers = word_numbers([tokenizer.tgt_piece(t) for t in hypothesis.tokens])
    words: list[tuple[list[int], list[float]]] = [([], []) for _ in range(numbers[-1] + 1 if numbers else 0)]
    for number, token, logp in zip(numbers, hypothesis.tokens, hypothesis.token_logprobs):
        words[number][0].append(token)
        words[number][1].append(logp)
    return [
        {"word": tokenizer.decode_tgt(ids), "confidence": round(math.exp(sum(lps) / len(lps)), 4)}
        for ids, lps in words
        if tokenizer.decode_tgt(ids)
    ]


def confidences(tokenizer: Tokenizer, lines: list[str], results: list[list[Hypothesis]], info: dict) -> list[float]:
    """The best hypothesis' default confidence of every line; the hypotheses carry their token
    log-probabilities (`TranslationEngine.score_tokens`)."""
    pieces = [len(ids) for ids in tokenizer.encode_src([" ".join(line.split()) for line in lines])]
    calibration = info.get("confidence")
    return [sentence_confidence(hyps[0].token_logprobs, n, calibration) for hyps, n in zip(results, pieces)]


def line_confidences(
    engine: TranslationEngine, lines: list[str], results: list[list[Hypothesis]], mc_dropout: int = 0, seed: int = 1
) -> list[float]:
    """The confidence of every line's best translation: the default one, or with `mc_dropout`
    passes the Monte Carlo dropout one (the PyTorch engine only)."""
    if not mc_dropout:
        engine.score_tokens(lines, results)
        return confidences(engine.tokenizer, lines, results, engine.info)
    check_mc_dropout(engine, mc_dropout)
    sources = encode_sources(engine, lines)
    with autocast_context(engine.device, engine.precision):
        return mc_dropout_confidences(
            engine.model, sources, [hyps[0].tokens for hyps in results], mc_dropout, seed, engine.device
        )


def check_mc_dropout(engine: TranslationEngine, mc_dropout: int) -> None:
    if mc_dropout and not isinstance(engine, Translator):
        raise MtrainError(
            "--mc-dropout runs the PyTorch model with dropout on; translate a --checkpoint with --engine torch"
        )


def meaning(info: dict, mc_dropout: int = 0) -> str:
    """What the confidence of a model with `info` (checkpoint.describe) means, in one sentence."""
    if mc_dropout:
        return MEANING["mc_dropout"] + f" ({mc_dropout} passes)"
    return MEANING["calibrated" if info.get("confidence") else "uncalibrated"]


@contextlib.contextmanager
def dropout_on(model: Transformer | Ensemble, seed: int) -> Iterator[None]:
    """The model in training mode (dropout on) with the random streams seeded, both restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        try:
            yield
        finally:
            model.eval()


@torch.no_grad()
def teacher_forced_logprobs(model: Transformer | Ensemble, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """log p(tgt_t | tgt_<t, src) of every target position (batch, tgt_len), </s> included in `tgt`;
    an ensemble's is the log of its members' mean probability, as in its search."""
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)
    members = model.members if isinstance(model, Ensemble) else [model]
    logps = torch.stack(
        [F.log_softmax(m(src, tgt_in).float(), -1).gather(-1, tgt[..., None]).squeeze(-1) for m in members]
    )
    return torch.logsumexp(logps, 0) - math.log(len(members))


def mc_dropout_confidences(
    model: Transformer | Ensemble,
    sources: list[list[int]],
    outputs: list[list[int]],
    passes: int,
    seed: int = 1,
    device: torch.device | None = None,
) -> list[float]:
    """D-TP (Fomicheva et al., 2020): the mean over `passes` forward passes with dropout on of
    exp(mean token log-probability) of each output (token ids without </s>) given its source (ids
    without </s>). The same seed gives the same numbers for the same batches."""
    totals = [float(passes) if not sources[i] else 0.0 for i in range(len(outputs))]  # an empty line: 1
    order = sorted((i for i in range(len(outputs)) if sources[i]), key=lambda i: len(outputs[i]))
    with dropout_on(model, seed):
        for batch in _batches(order, outputs):
            src, tgt = _padded([sources[i] for i in batch], device), _padded([outputs[i] for i in batch], device)
            lengths = (tgt != PAD).sum(1)
            for _ in range(passes):
                logps = teacher_forced_logprobs(model, src, tgt).masked_fill(tgt == PAD, 0.0)
                for i, value in zip(batch, (logps.sum(1) / lengths).exp().tolist()):
                    totals[i] += value
    return [total / passes for total in totals]


def _batches(order: list[int], outputs: list[list[int]]) -> Iterator[list[int]]:
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * (len(outputs[i]) + 1) > SCORING_TOKENS:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _padded(rows: list[list[int]], device: torch.device | None) -> torch.Tensor:
    """Rows of token ids, each followed by </s>, padded into one tensor."""
    out = torch.full((len(rows), max(len(r) for r in rows) + 1), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        out[i, len(r)] = EOS
    return out.to(device) if device is not None else out

"""Batched beam search, greedy decoding and sampling with a key/value cache.

Beam search as in the paper (section 6.1): beam 4, GNMT length penalty
lp(Y) = ((5 + |Y|) / 6) ** alpha with |Y| counting the generated tokens including </s>,
maximum output length a * |source| + b. The encoder runs once per batch, the cross-attention
keys/values once, and the decoder's self-attention keys/values are cached and reordered with
the beams. A sentence is finished once it has `beam` finished hypotheses and its best live one,
ended at the next step, would score no better than the worst of them: Hugging Face generate's
default rule. (The exact bound divides by the largest possible length penalty instead; on the
Multi30K test set it gave the same output for every sentence and took longer: docs/benchmarks.md.)
Finished sentences leave the batch, so one long sentence costs only its own compute.
Every search here runs unchanged on an `Ensemble` of checkpoints (ensemble.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mtrain.config import DecodeConfig
from mtrain.inference.ensemble import Ensemble
from mtrain.model.transformer import KVCache, Transformer
from mtrain.special import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]  # without </s>
    score: float  # length-normalised log-probability (what the beam ranks by)
    logprob: float  # plain sum of token log-probabilities, </s> included
    token_logprobs: list[float] = field(default_factory=list)  # each token's, then </s>'s (inference/confidence.py)
    attention: torch.Tensor | None = None  # with `attention=`: the recorded head's rows, one per token (tokens, src)


class AttentionRecorder:
    """The cross-attention of one decoder layer (one head, or the mean of its heads) at each step of
    a search, so that the word alignment of the output comes with it instead of from a second,
    teacher-forced pass (insight/markup.py). An ensemble's is its first member's."""

    def __init__(self, model: Transformer | Ensemble, layer: int, head: int | None):
        first = model.members[0] if isinstance(model, Ensemble) else model
        self.module, self.head = first.decoder[layer - 1].cross_attn, head

    def __enter__(self) -> AttentionRecorder:
        self.module.record = []
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.record = None

    def take(self) -> torch.Tensor:
        """The last step's weights (rows, source positions)."""
        weights = self.module.record.pop()[:, :, -1]  # (rows, heads, keys)
        return (weights.mean(1) if self.head is None else weights[:, self.head]).float()


def length_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


def _max_lengths(src: torch.Tensor, model: Transformer | Ensemble, a: float, b: int) -> torch.Tensor:
    src_len = (src != PAD).sum(1) - 1  # without </s>
    return torch.clamp((a * src_len).long() + b, max=model.config.max_positions - 1).clamp(min=1)


def _select_memory(memory_kv: list[list[torch.Tensor]], rows: torch.Tensor) -> None:
    """Keep the given batch rows of every layer's cross-attention keys and values."""
    for kv in memory_kv:
        kv[:] = [t.index_select(0, rows) for t in kv]


def _forbid(logp: torch.Tensor, must_end: torch.Tensor, step: int) -> None:
    """No <pad> or <s> ever, no </s> as the first token, and only </s> in the rows (sentences) at
    their maximum length, in place.

    A translation has at least one token (fairseq's min_len 1): the length penalty divides the
    empty hypothesis's score least, so at step 0 a </s> a little likelier than usual could beat
    every real sentence (the empty-output case of Stahlberg and Byrne, 2019)."""
    logp[..., PAD] = logp[..., BOS] = -torch.inf
    if step == 0:
        logp[~must_end, ..., EOS] = -torch.inf
    if must_end.any():
        logp[must_end, ..., :EOS] = logp[must_end, ..., EOS + 1 :] = -torch.inf


def line_generators(seed: int, lines: list[int]) -> list[torch.Generator]:
    """One random stream per input line, from (seed, line number): a line's sample does not depend
    on which other lines share its batch."""
    return [torch.Generator().manual_seed(hash((seed, line)) & (2**63 - 1)) for line in lines]  # int hashes are stable


def draw_tokens(logp: torch.Tensor, sampling: DecodeConfig, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row, drawn from softmax(logp / temperature), restricted to the top-k tokens
    with sampling 'topk', by the Gumbel-max trick with each row's own random stream."""
    scores = logp.float() / sampling.temperature
    if sampling.sampling == "topk" and sampling.topk < scores.size(-1):
        kth = scores.topk(sampling.topk, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -torch.inf)
    uniform = torch.stack([torch.rand(scores.size(-1), generator=g) for g in generators]).to(scores.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1 - 1e-7)))
    return (scores + gumbel).argmax(-1)


@torch.no_grad()
def greedy_search(
    model: Transformer | Ensemble,
    src: torch.Tensor,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    sampling: DecodeConfig | None = None,
    generators: list[torch.Generator] | None = None,
    attention: tuple[int, int | None] | None = None,
) -> list[Hypothesis]:
    """The most probable token at every step (or, given `sampling` and one random stream per row,
    a drawn one), until </s> or the maximum length. With `attention` (layer from 1, head or None),
    each hypothesis keeps that cross-attention (`AttentionRecorder`)."""
    if attention is None:
        return _greedy(model, src, max_len_a, max_len_b, sampling, generators, None)
    with AttentionRecorder(model, *attention) as recorder:
        return _greedy(model, src, max_len_a, max_len_b, sampling, generators, recorder)


def _greedy(
    model: Transformer | Ensemble,
    src: torch.Tensor,
    max_len_a: float,
    max_len_b: int,
    sampling: DecodeConfig | None,
    generators: list[torch.Generator] | None,
    recorder: AttentionRecorder | None,
) -> list[Hypothesis]:
    memory, src_mask = model.encode(src)
    memory_kv = [list(kv) for kv in model.cross_attention_memory(memory)]
    max_lens = _max_lengths(src, model, max_len_a, max_len_b)
    caches = [KVCache(int(max_lens.max())) for _ in model.decoder]
    alive = torch.arange(src.size(0), device=src.device)  # original row of each live sentence
    tokens = torch.full((src.size(0), 1), BOS, dtype=torch.long, device=src.device)
    logprob = torch.zeros(src.size(0), device=src.device)
    token_logps = torch.zeros(src.size(0), 0, device=src.device)  # each chosen token's log-probability
    attention = torch.zeros(src.size(0), 0, src.size(1), device=src.device)  # with a recorder: each step's row
    results: list[Hypothesis | None] = [None] * src.size(0)
    for step in range(int(max_lens.max())):
        logp = model.decode_step(tokens[:, -1:], memory_kv, src_mask, caches, step)
        step_attention = recorder.take() if recorder else None
        _forbid(logp, step + 1 >= max_lens[alive], step)
        if generators is None:
            best, token = logp.max(-1)
        else:
            token = draw_tokens(logp, sampling, [generators[row] for row in alive.tolist()])
            best = logp.gather(-1, token[:, None]).squeeze(-1)
        logprob = logprob + best
        token_logps = torch.cat([token_logps, best[:, None].float()], 1)
        tokens = torch.cat([tokens, token[:, None]], 1)
        done = token == EOS
        for row in done.nonzero().flatten().tolist():
            score = logprob[row].item()
            rows = attention[row] if recorder else None
            results[alive[row]] = Hypothesis(tokens[row, 1:-1].tolist(), score, score, token_logps[row].tolist(), rows)
        if done.all():
            break
        if recorder:
            attention = torch.cat([attention, step_attention[:, None]], 1)
        if done.any():
            keep = (~done).nonzero().flatten()
            alive, tokens, logprob, src_mask = alive[keep], tokens[keep], logprob[keep], src_mask[keep]
            token_logps, attention = token_logps[keep], attention[keep]
            _select_memory(memory_kv, keep)
            for cache in caches:
                cache.select(keep)
    return results


@torch.no_grad()
def beam_search(
    model: Transformer | Ensemble,
    src: torch.Tensor,
    beam: int = 4,
    lenpen: float = 0.6,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    nbest: int = 1,
    attention: tuple[int, int | None] | None = None,
) -> list[list[Hypothesis]]:
    """The `nbest` best hypotheses of each source sentence, best first. With `attention` (layer
    from 1, head or None), each keeps that cross-attention (`AttentionRecorder`)."""
    if attention is None:
        return _beam(model, src, beam, lenpen, max_len_a, max_len_b, nbest, None)
    with AttentionRecorder(model, *attention) as recorder:
        return _beam(model, src, beam, lenpen, max_len_a, max_len_b, nbest, recorder)


def _beam(
    model: Transformer | Ensemble,
    src: torch.Tensor,
    beam: int,
    lenpen: float,
    max_len_a: float,
    max_len_b: int,
    nbest: int,
    recorder: AttentionRecorder | None,
) -> list[list[Hypothesis]]:
    batch, k, device = src.size(0), beam, src.device
    memory, src_mask = model.encode(src)
    rows = torch.arange(batch, device=device).repeat_interleave(k)  # every sentence k times
    memory_kv = [[t.index_select(0, rows) for t in kv] for kv in model.cross_attention_memory(memory)]
    src_mask = src_mask.index_select(0, rows)
    max_lens = _max_lengths(src, model, max_len_a, max_len_b)
    caches = [KVCache(int(max_lens.max())) for _ in model.decoder]
    alive = torch.arange(batch, device=device)  # original index of each live sentence
    tokens = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)
    token_logps = torch.zeros(batch * k, 0, device=device)  # each beam's tokens' log-probabilities
    attention = torch.zeros(batch * k, 0, src.size(1), device=device)  # with a recorder: each step's row
    scores = torch.full((batch, k), -torch.inf, device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first one
    best_finished = torch.full((batch, k), -torch.inf, device=device)  # each live sentence's k best finished scores
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for step in range(int(max_lens.max())):
        n = alive.numel()
        logp = model.decode_step(tokens[:, -1:], memory_kv, src_mask, caches, step)
        step_attention = recorder.take() if recorder else None
        must_end = step + 1 >= max_lens[alive]
        top_scores, top_beam, top_token, top_logp = _expand(logp.view(n, k, -1), scores, must_end, step)

        # Hypotheses ending in </s> among the k best candidates are finished.
        penalty = length_penalty(step + 1, lenpen)
        ended = (top_token[:, :k] == EOS) & torch.isfinite(top_scores[:, :k])
        best_finished = (
            torch.cat([best_finished, (top_scores[:, :k] / penalty).masked_fill(~ended, -torch.inf)], 1)
            .topk(k, dim=1)
            .values
        )
        if ended.any():
            rows_so_far = attention.view(n, k, step, src.size(1)) if recorder else None
            history = (tokens.view(n, k, -1), token_logps.view(n, k, -1), rows_so_far)
            _collect_finished(finished, alive, ended, (top_scores, top_beam, top_logp), history, penalty)

        # The k best candidates not ending in </s> continue.
        scores, order = top_scores.masked_fill(top_token == EOS, -torch.inf).topk(k, dim=1)
        beams, next_tokens, next_logps = (t.gather(1, order) for t in (top_beam, top_token, top_logp))

        # Done when the best live hypothesis, ended at the next step, would not beat the k-th finished one.
        best_next = scores[:, 0] / length_penalty(step + 2, lenpen)
        done = must_end | ~torch.isfinite(scores[:, 0]) | (best_next <= best_finished[:, -1])
        if done.all():
            break
        flat = (torch.arange(n, device=device)[:, None] * k + beams).view(-1)  # the beam each new one extends
        if done.any():
            keep = (~done).nonzero().flatten()
            keep_rows = (keep[:, None] * k + torch.arange(k, device=device)).view(-1)
            alive, scores, best_finished = alive[keep], scores[keep], best_finished[keep]
            flat, next_tokens, next_logps = flat[keep_rows], next_tokens[keep], next_logps[keep]
            src_mask = src_mask.index_select(0, keep_rows)
            _select_memory(memory_kv, keep_rows)
        tokens = torch.cat([tokens.index_select(0, flat), next_tokens.view(-1, 1)], 1)
        token_logps = torch.cat([token_logps.index_select(0, flat), next_logps.view(-1, 1)], 1)
        if recorder:
            attention = torch.cat([attention, step_attention[:, None]], 1).index_select(0, flat)
        for cache in caches:
            cache.select(flat)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def _expand(
    logp: torch.Tensor, scores: torch.Tensor, must_end: torch.Tensor, step: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2k best one-token extensions of each sentence's k beams (k of them surely not </s>):
    their scores, the beam each extends, the token each adds and that token's log-probability.
    `logp` is (n, k, vocab).

    A sentence's 2k best extensions are among the 2k best tokens of each of its beams, so the
    beam scores are added to those only, not to the whole vocabulary."""
    n, k, vocab = logp.shape
    _forbid(logp, must_end, step)
    per_beam = min(2 * k, vocab)
    token_scores, tokens = logp.topk(per_beam, dim=-1)  # (n, k, per_beam)
    top_scores, top_index = (scores.unsqueeze(-1) + token_scores).view(n, k * per_beam).topk(2 * k, dim=1)
    chosen_logp = token_scores.view(n, -1).gather(1, top_index)
    return top_scores, top_index // per_beam, tokens.view(n, -1).gather(1, top_index), chosen_logp


def _collect_finished(
    finished: list[list[Hypothesis]],
    alive: torch.Tensor,
    ended: torch.Tensor,
    candidates: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    history: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    penalty: float,
) -> None:
    """Append the hypotheses that just ended in </s> to their sentences' lists (one host read per
    step with any). `candidates`: the step's (scores, beam, </s> log-probability) of each
    candidate; `history`: each beam's tokens, their log-probabilities and attention rows so far."""
    rows, cols = ended.nonzero(as_tuple=True)
    sentence = alive.tolist()
    top_scores, top_beam, top_logp = (t[rows, cols].tolist() for t in candidates)
    tokens, logps, attention = history
    for r, s, b, end in zip(rows.tolist(), top_scores, top_beam, top_logp):
        rows_of = attention[r, b] if attention is not None else None
        hypothesis = Hypothesis(tokens[r, b, 1:].tolist(), s / penalty, s, logps[r, b].tolist() + [end], rows_of)
        finished[sentence[r]].append(hypothesis)

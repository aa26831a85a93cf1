"""Lexically constrained beam search: every finished translation contains every given term.

Dynamic beam allocation (Post and Vilar, 2018, "Fast Lexically Constrained Decoding with Dynamic
Beam Allocation for Neural Machine Translation"): a hypothesis' state is which constraints (token
sequences) it has met and how far into one it is. At each step each live hypothesis offers its
2k best next tokens, the next token of the constraint it is in (or the first token of every
constraint it has not met), and its best single token; the candidates are grouped into banks by
the number of constraint tokens they have met, and the k places of the beam are dealt to the banks
in turn, the most advanced first, each bank giving its best remaining candidate (a bank with no
candidate left passes its turn on). A hypothesis may end only when it has met every constraint, so
every finished hypothesis does. A constraint abandoned half-way is unwound (its tokens no longer
count) and may start again.

The model calls are batched as in `beam_search` (search.py): one decoder step for every live
hypothesis of every sentence, its caches reordered with the beams; the bookkeeping of states and
banks is per sentence in Python. Scores, the length penalty and the stopping rule are those of
`beam_search`, so with no constraints it chooses the same hypotheses, with one bound: the length
penalty's exponent is at most `MAX_LENPEN` (below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mtrain.data.tokenizer import WORD_START, Tokenizer
from mtrain.inference.ensemble import Ensemble
from mtrain.inference.search import Hypothesis, _forbid, _max_lengths, _select_memory, length_penalty
from mtrain.model.transformer import KVCache, Transformer
from mtrain.special import BOS, EOS

MAX_LENPEN = 1.0
"""The largest length penalty exponent the constrained search applies. Above 1 the penalty divides a
score by more than the length, so any hypothesis long enough outscores a short one; a plain search
still ends where the model puts </s>, but a hypothesis that may not end before its term runs on and
puts the term last ("... vor einer Lampe. Ein Mann ... Langarmshirt."). Measured on Multi30K:
docs/trials.md, 2026-12-06."""


@dataclass(frozen=True)
class State:
    """Which constraints a hypothesis has met (a bit each) and the one it is inside (index, tokens matched)."""

    met: int = 0
    inside: tuple[int, int] | None = None
    closed: bool = False  # a constraint ended with the last token: the next may not continue its word

    def progress(self, constraints: list[list[int]]) -> int:
        """Constraint tokens met: the bank this hypothesis belongs to."""
        done = sum(len(c) for i, c in enumerate(constraints) if self.met >> i & 1)
        return done + (self.inside[1] if self.inside else 0)

    def complete(self, constraints: list[list[int]]) -> bool:
        return self.met == (1 << len(constraints)) - 1

    def next_tokens(self, constraints: list[list[int]]) -> set[int]:
        """The tokens that advance a constraint from here."""
        if self.inside is not None:
            index, matched = self.inside
            return {constraints[index][matched]}
        return {c[0] for i, c in enumerate(constraints) if not self.met >> i & 1}

    def advance(self, token: int, constraints: list[list[int]]) -> list[State]:
        """The states `token` can lead to: on in the constraint it is inside, or into any unmet
        constraint it starts (also in place of an abandoned one), each a hypothesis of its own, so
        that constraints sharing tokens are all tried; or, when it does neither, out of any."""
        states = []
        if self.inside is not None:
            index, matched = self.inside
            if constraints[index][matched] == token:
                done = matched + 1 == len(constraints[index])
                states.append(
                    State(self.met | 1 << index, closed=True) if done else State(self.met, (index, matched + 1))
                )
        for i, c in enumerate(constraints):
            if not self.met >> i & 1 and c[0] == token:
                states.append(State(self.met | 1 << i, closed=True) if len(c) == 1 else State(self.met, (i, 1)))
        return states or [State(self.met)]


@dataclass
class Live:
    """One place of a sentence's beam: its score so far, state, tokens and their log-probabilities."""

    score: float
    state: State
    tokens: list[int]
    logps: list[float]


@dataclass
class Candidate:
    score: float
    parent: int  # the place in the beam it extends
    token: int
    logp: float
    state: State


def word_continuations(tokenizer: Tokenizer) -> torch.Tensor:
    """Which target pieces continue a word (no "▁" in front, a letter or digit in them): what may not
    follow a term. Punctuation may: "Hund." keeps the term "Hund" whole."""
    pieces = [tokenizer.tgt_piece(i) for i in range(tokenizer.tgt_vocab_size)]
    return torch.tensor([not p.startswith(WORD_START) and any(ch.isalnum() for ch in p) for p in pieces])


def min_length(constraints: list[list[int]]) -> int:
    """The fewest output tokens (</s> included) that can hold every constraint."""
    return sum(len(c) for c in constraints) + 1


@torch.no_grad()
def constrained_beam_search(
    model: Transformer | Ensemble,
    src: torch.Tensor,
    constraints: list[list[list[int]]],
    beam: int = 4,
    lenpen: float = 0.6,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    nbest: int = 1,
    continues_word: torch.Tensor | None = None,
) -> list[list[Hypothesis]]:
    """The `nbest` best hypotheses of each source sentence that contain all of its `constraints`
    (token sequences), best first; an empty list where none fit in the length limit.
    `continues_word` (bool, target vocabulary): the pieces that continue a word, which may not
    follow a constraint's last piece (a term stays a whole word: "Hund", not "Hunde"). A `lenpen`
    above `MAX_LENPEN` searches as `MAX_LENPEN`."""
    batch, k, device, lenpen = src.size(0), beam, src.device, min(lenpen, MAX_LENPEN)
    memory, src_mask = model.encode(src)
    rows = torch.arange(batch, device=device).repeat_interleave(k)
    memory_kv = [[t.index_select(0, rows) for t in kv] for kv in model.cross_attention_memory(memory)]
    src_mask = src_mask.index_select(0, rows)
    max_lens = _max_lengths(src, model, max_len_a, max_len_b).tolist()
    caches = [KVCache(max(max_lens)) for _ in model.decoder]
    beams = [[Live(0.0, State(), [], [])] + [Live(-math.inf, State(), [], [])] * (k - 1) for _ in range(batch)]
    alive = list(range(batch))  # original index of each live sentence
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    last = torch.full((batch * k, 1), BOS, dtype=torch.long, device=device)
    for step in range(max(max_lens)):
        logp = model.decode_step(last, memory_kv, src_mask, caches, step)
        must_end = torch.tensor([step + 1 >= max_lens[s] for s in alive], device=device).repeat_interleave(k)
        _forbid(logp, must_end, step)
        places = [(s, b) for s in alive for b in beams[s]]
        _forbid_by_state([b.state for _, b in places], [constraints[s] for s, _ in places], logp, continues_word)
        top_logp, top_token = logp.topk(min(2 * k, logp.size(-1)), dim=-1)
        wanted = _constraint_logps(logp, places, constraints)
        top_logp, top_token = top_logp.tolist(), top_token.tolist()
        keep, parents, tokens = [], [], []
        for i, s in enumerate(alive):
            rows_of = range(i * k, (i + 1) * k)
            candidates = _candidates(beams[s], rows_of, top_logp, top_token, wanted, constraints[s])
            chosen = _allocate(candidates, beams[s], constraints[s], step, lenpen, finished[s])
            if _done(chosen, finished[s], step, lenpen, step + 1 >= max_lens[s]):
                continue
            keep.append(i)
            parents += [i * k + c.parent for c in chosen]
            tokens += [c.token for c in chosen]
            beams[s] = [_extend(beams[s][c.parent], c) for c in chosen]
        if not keep:
            break
        alive = [alive[i] for i in keep]
        flat = torch.tensor(parents, device=device)
        src_mask = src_mask.index_select(0, flat)
        _select_memory(memory_kv, flat)
        for cache in caches:
            cache.select(flat)
        last = torch.tensor(tokens, device=device).view(-1, 1)
    return [_distinct(sorted(hyps, key=lambda h: -h.score))[:nbest] for hyps in finished]


def _distinct(hyps: list[Hypothesis]) -> list[Hypothesis]:
    """The first of each output: one output may be reached through different constraint states."""
    seen: set[tuple[int, ...]] = set()
    distinct = []
    for h in hyps:
        if tuple(h.tokens) not in seen:
            seen.add(tuple(h.tokens))
            distinct.append(h)
    return distinct


def _forbid_by_state(
    states: list[State], constraints: list[list[list[int]]], logp: torch.Tensor, continues_word: torch.Tensor | None
) -> None:
    """No end before every constraint is met; no piece that continues a word right after a constraint."""
    incomplete = torch.tensor([not st.complete(c) for st, c in zip(states, constraints)], device=logp.device)
    logp[incomplete, EOS] = -torch.inf
    closed = torch.tensor([st.closed for st in states], device=logp.device)
    if continues_word is not None and closed.any():
        rows = closed.nonzero().flatten()
        logp[rows[:, None], continues_word.nonzero().flatten()[None, :]] = -torch.inf


def _constraint_logps(
    logp: torch.Tensor, places: list[tuple[int, Live]], constraints: list[list[list[int]]]
) -> list[dict[int, float]]:
    """For each beam place, the log-probability of each token that would advance its constraints
    (one read of the model's output for all of them)."""
    row_index, token_index = [], []
    for row, (s, live) in enumerate(places):
        for token in live.state.next_tokens(constraints[s]):
            row_index.append(row)
            token_index.append(token)
    values = logp[row_index, token_index].tolist() if row_index else []
    wanted: list[dict[int, float]] = [{} for _ in places]
    for row, token, value in zip(row_index, token_index, values):
        wanted[row][token] = value
    return wanted


def _candidates(
    lives: list[Live],
    rows: range,
    top_logp: list[list[float]],
    top_token: list[list[int]],
    wanted: list[dict[int, float]],
    constraints: list[list[int]],
) -> list[Candidate]:
    """Every place's best tokens and its constraint tokens, each (place, token, state) once."""
    found: dict[tuple[int, int, State], Candidate] = {}
    for place, (live, row) in enumerate(zip(lives, rows)):
        if live.score == -math.inf:
            continue
        for token, value in list(zip(top_token[row], top_logp[row])) + list(wanted[row].items()):
            if value == -math.inf:
                continue
            for state in live.state.advance(token, constraints):
                found[place, token, state] = Candidate(live.score + value, place, token, value, state)
    return list(found.values())


def _allocate(
    candidates: list[Candidate],
    lives: list[Live],
    constraints: list[list[int]],
    step: int,
    lenpen: float,
    finished: list[Hypothesis],
) -> list[Candidate]:
    """The k candidates that continue (dynamic beam allocation, module docstring). As in
    `beam_search`, the candidates ending in </s> among the k chosen go to `finished` instead, but
    chosen by the banks, not by score alone: a hypothesis that has met its constraints scores
    below those that have not, and would otherwise never get to end. Empty places are filled with
    dead ones."""
    k, penalty = len(lives), length_penalty(step + 1, lenpen)
    for c in _deal(candidates, constraints, k):
        if c.token == EOS:
            parent = lives[c.parent]
            finished.append(Hypothesis(parent.tokens, c.score / penalty, c.score, parent.logps + [c.logp]))
    chosen = _deal([c for c in candidates if c.token != EOS], constraints, k)
    return chosen + [Candidate(-math.inf, 0, EOS, -math.inf, State())] * (k - len(chosen))


def _deal(candidates: list[Candidate], constraints: list[list[int]], k: int) -> list[Candidate]:
    """Up to k candidates, the banks (constraint tokens met) taking turns from the most advanced,
    each giving its best remaining one; best first."""
    banks: dict[int, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: -c.score):
        banks.setdefault(c.state.progress(constraints), []).append(c)
    chosen: list[Candidate] = []
    order = sorted(banks, reverse=True)
    while len(chosen) < k and any(banks[b] for b in order):
        for bank in order:
            if banks[bank] and len(chosen) < k:
                chosen.append(banks[bank].pop(0))
    return sorted(chosen, key=lambda c: -c.score)


def _done(chosen: list[Candidate], finished: list[Hypothesis], step: int, lenpen: float, at_limit: bool) -> bool:
    """`beam_search`'s rule: the best live hypothesis ended at the next step would not beat the k-th finished one."""
    k = len(chosen)
    if at_limit or chosen[0].score == -math.inf:
        return True
    if len(finished) < k:
        return False
    worst = sorted(h.score for h in finished)[-k]
    return chosen[0].score / length_penalty(step + 2, lenpen) <= worst


def _extend(live: Live, candidate: Candidate) -> Live:
    if candidate.score == -math.inf:
        return Live(-math.inf, State(), live.tokens, live.logps)
    return Live(candidate.score, candidate.state, live.tokens + [candidate.token], live.logps + [candidate.logp])

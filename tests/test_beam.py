"""Beam search against a scripted stand-in model whose next-token distributions are fixed in
advance, so its edge cases are checked exactly and without training: </s> likeliest first,
ties, the maximum length, n-best order, and equality with exhaustive search."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mtrain.inference.search import beam_search, greedy_search, length_penalty
from mtrain.special import BOS, EOS, PAD

from helpers import PRODUCIBLE, Scripted, random_probabilities


def source(rows: int = 1) -> torch.Tensor:
    return torch.tensor([[4, EOS]] * rows)  # one source token: the maximum length is 0 * 1 + b


def exhaustive(probabilities, max_len: int, lenpen: float) -> list[tuple[float, list[int]]]:
    """Every output of one to `max_len` tokens (</s> included; the empty one is never written),
    scored as beam search scores them."""
    found = []
    for length in range(1, max_len):
        for words in itertools.product(PRODUCIBLE, repeat=length):
            sequence = list(words) + [EOS]
            logprob = sum(math.log(probabilities(tuple(sequence[:i]))[t]) for i, t in enumerate(sequence))
            found.append((logprob / length_penalty(len(sequence), lenpen), list(words)))
    return sorted(found, key=lambda f: -f[0])


@pytest.mark.parametrize("lenpen", [0.0, 0.6, 1.0])
def test_a_wide_enough_beam_finds_the_exhaustive_n_best_in_order(lenpen):
    model = Scripted(random_probabilities)
    expected = exhaustive(random_probabilities, 4, lenpen)[:5]
    found = beam_search(model, source(), beam=len(PRODUCIBLE) ** 3, lenpen=lenpen, max_len_a=0.0, max_len_b=4, nbest=5)[
        0
    ]
    assert [h.tokens for h in found] == [tokens for _, tokens in expected]
    assert [h.score for h in found] == pytest.approx([score for score, _ in expected], rel=1e-5)


def test_end_of_sentence_likeliest_at_the_first_step_still_gives_a_word():
    probabilities = lambda prefix: [0, 0.05, 0, 0.9, 0.03, 0.02] if not prefix else [0, 0.1, 0, 0.7, 0.1, 0.1]
    for found in (
        beam_search(Scripted(probabilities), source(), beam=3, lenpen=0.6)[0][0],
        greedy_search(Scripted(probabilities), source())[0],
    ):
        assert found.tokens == [1] and found.logprob == pytest.approx(math.log(0.05) + math.log(0.7))


def test_the_maximum_length_forces_the_end():
    never_ends = lambda prefix: [0, 0, 0, 1e-6, 1.0 - 1e-6, 0]  # </s> is possible but always far less likely
    found = beam_search(Scripted(never_ends), source(), beam=2, lenpen=0.6, max_len_a=0.0, max_len_b=5, nbest=2)[0]
    assert found[0].tokens == [4, 4, 4, 4]  # 4 words + the forced </s> = 5 tokens
    assert all(len(h.tokens) <= 4 for h in found) and found[0].score >= found[1].score
    assert greedy_search(Scripted(never_ends), source(), max_len_a=0.0, max_len_b=5)[0].tokens == [4, 4, 4, 4]


def test_a_sentence_stops_once_its_best_live_hypothesis_cannot_win_at_the_next_step():
    table = {(): [0, 0, 0, 0.5, 0.3, 0.2], (4,): [0, 0, 0, 0.9, 0.05, 0.05], (5,): [0, 0, 0, 0.5, 0.25, 0.25]}
    probabilities = lambda prefix: table.get(prefix, [0, 0, 0, 0.1, 0.45, 0.45])
    model, steps = Scripted(probabilities), []
    decode_step = model.decode_step
    model.decode_step = lambda tokens, *rest: steps.append(tokens.size(0)) or decode_step(tokens, *rest)
    # </s> may not come first; after step 2 the finished [4] (0.27) and [5] (0.1) outscore every live
    # hypothesis (0.05 at best), and a longer one only loses probability (lenpen 0): the search stops
    # long before 10 tokens.
    found = beam_search(model, source(), beam=2, lenpen=0.0, max_len_a=0.0, max_len_b=10, nbest=2)[0]
    assert [h.tokens for h in found] == [[4], [5]]
    assert len(steps) == 2


def test_ties_keep_both_hypotheses_with_equal_scores():
    tie = lambda prefix: [0, 0, 0, 0.2, 0.4, 0.4] if not prefix else [0, 0, 0, 1.0, 0, 0]
    found = beam_search(Scripted(tie), source(), beam=3, lenpen=0.6, nbest=2)[0]
    assert sorted(h.tokens for h in found) == [[4], [5]]
    assert found[0].score == pytest.approx(found[1].score)


def test_sentences_in_a_batch_do_not_disturb_each_other():
    model = Scripted(random_probabilities)
    alone = beam_search(model, source(1), beam=4, lenpen=0.6, max_len_b=6, nbest=4)[0]
    together = beam_search(model, source(3), beam=4, lenpen=0.6, max_len_b=6, nbest=4)
    for found in together:
        assert [h.tokens for h in found] == [h.tokens for h in alone]


def test_beam_one_equals_greedy_on_the_scripted_model():
    greedy = greedy_search(Scripted(random_probabilities), source(), max_len_b=8)[0]
    beam = beam_search(Scripted(random_probabilities), source(), beam=1, lenpen=0.0, max_len_b=8)[0][0]
    assert beam.tokens == greedy.tokens and beam.logprob == pytest.approx(greedy.logprob)


def test_special_tokens_are_never_produced():
    likes_specials = lambda prefix: [0.3, 0.05, 0.3, 0.1, 0.25, 0.0]  # pad and <s> are the most likely
    for found in beam_search(Scripted(likes_specials), source(), beam=3, max_len_b=5, nbest=3)[0]:
        assert PAD not in found.tokens and BOS not in found.tokens

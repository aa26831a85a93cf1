"""Token-budget batches: length-bucketed, seeded, resumable and sliced across ranks.

A training epoch is a list of batches, each holding at most `max_tokens` tokens *including
padding* (sentences of similar length go together, so little is wasted). The partition and
the order of batches depend only on (seed, epoch), so a run resumed at (epoch, step) sees
exactly the batches it would have seen. One optimizer step consumes `world_size *
update_freq` consecutive batches; rank r takes every world_size-th of them, so each rank gets
distinct batches and the union over ranks is independent of how the step is split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtrain.data.binarize import Split
from mtrain.special import BOS, EOS, PAD


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len) source ids + eos, padded
    tgt_in: torch.Tensor  # (batch, tgt_len) bos + target ids, padded: the decoder's input
    tgt_out: torch.Tensor  # (batch, tgt_len) target ids + eos, padded: what it must predict
    ids: np.ndarray  # sentence indices in the split
    tgt_tokens: int  # target tokens to predict (eos included), counted on the host

    def to(self, device) -> "Batch":
        """The batch on `device`; from pinned memory on CUDA, so the copy does not block the host."""
        move = (
            (lambda t: t.pin_memory().to(device, non_blocking=True))
            if torch.device(device).type == "cuda"
            else (lambda t: t.to(device))
        )
        return Batch(move(self.src), move(self.tgt_in), move(self.tgt_out), self.ids, self.tgt_tokens)


def token_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, order: np.ndarray) -> list[np.ndarray]:
    """Cut `order` (indices sorted by length) into batches of at most max_tokens padded tokens.
    A sentence longer than the budget alone forms its own batch."""
    width = np.maximum(src_lens[order], tgt_lens[order]) + 1  # +1: eos / bos
    batches, start, longest = [], 0, 0
    for i, w in enumerate(width.tolist()):
        longest_if_added = max(longest, w)
        if i > start and longest_if_added * (i - start + 1) > max_tokens:
            batches.append(order[start:i])
            start, longest_if_added = i, w
        longest = longest_if_added
    if start < len(order):
        batches.append(order[start:])
    return batches


def collate(split: Split, ids: np.ndarray, max_len: int) -> Batch:
    """Padded tensors for the sentences `ids`; sequences longer than max_len-1 are cut."""
    srcs = [split.src[i][: max_len - 1] for i in ids]
    tgts = [split.tgt[i][: max_len - 1] for i in ids]
    src = np.full((len(ids), max(map(len, srcs)) + 1), PAD, np.int64)
    tgt_in = np.full((len(ids), max(map(len, tgts)) + 1), PAD, np.int64)
    tgt_out = tgt_in.copy()
    for row, (s, t) in enumerate(zip(srcs, tgts)):
        src[row, : len(s)] = s
        src[row, len(s)] = EOS
        tgt_in[row, 0] = BOS
        tgt_in[row, 1 : len(t) + 1] = t
        tgt_out[row, : len(t)] = t
        tgt_out[row, len(t)] = EOS
    return Batch(
        torch.from_numpy(src), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), ids, sum(len(t) + 1 for t in tgts)
    )


class TrainBatches:
    """The training batch schedule: which batches a rank sees at (epoch, step)."""

    def __init__(
        self,
        split: Split,
        max_tokens: int,
        seed: int,
        max_len: int,
        update_freq: int = 1,
        world_size: int = 1,
        rank: int = 0,
    ):
        self.split, self.max_tokens, self.seed, self.max_len = split, max_tokens, seed, max_len
        self.update_freq, self.world_size, self.rank = update_freq, world_size, rank
        src_lens, tgt_lens = split.src.lengths, split.tgt.lengths
        fits = (src_lens < max_len) & (tgt_lens < max_len)
        self.usable = np.flatnonzero(fits)
        self.skipped = int(len(fits) - len(self.usable))  # longer than the model's positions
        self._epoch, self._batches = None, None

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This epoch's batches (all ranks'), shuffled from (seed, epoch)."""
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            src_lens, tgt_lens = self.split.src.lengths, self.split.tgt.lengths
            idx = self.usable
            # sort by target then source length; ties broken randomly so buckets vary by epoch
            order = idx[np.lexsort((rng.random(len(idx)), src_lens[idx], tgt_lens[idx]))]
            batches = token_batches(src_lens, tgt_lens, self.max_tokens, order)
            self._batches = [batches[i] for i in rng.permutation(len(batches))]
            self._epoch = epoch
        return self._batches

    def steps_in_epoch(self, epoch: int) -> int:
        """Whole optimizer steps in an epoch (a last partial step is dropped)."""
        return len(self.batches(epoch)) // (self.world_size * self.update_freq)

    def step(self, epoch: int, step: int) -> list[Batch]:
        """This rank's micro-batches for optimizer step `step` (0-based) of `epoch`."""
        per_step = self.world_size * self.update_freq
        group = self.batches(epoch)[step * per_step : (step + 1) * per_step]
        return [collate(self.split, ids, self.max_len) for ids in group[self.rank :: self.world_size]]


def eval_batches(split: Split, max_tokens: int, max_len: int) -> list[Batch]:
    """Every sentence once, in length order (no shuffling, nothing dropped)."""
    src_lens, tgt_lens = split.src.lengths, split.tgt.lengths
    order = np.lexsort((src_lens, tgt_lens))
    return [
        collate(split, ids, max_len)
        for ids in token_batches(np.minimum(src_lens, max_len), np.minimum(tgt_lens, max_len), max_tokens, order)
    ]

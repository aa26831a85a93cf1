"""Token-budget batches: length-bucketed, seeded, resumable and sliced across ranks.

A training epoch is a list of batches, each holding at most `max_tokens` tokens *including
padding* (sentences of similar length go together, so little is wasted). With several
training corpora, an epoch first draws each corpus's share of pairs by its weight
(`epoch_pairs`); with subword sampling, the epoch's segmentation is drawn first. The pairs,
the partition and the order of batches depend only on (seed, epoch), so a run resumed at
(epoch, step) sees exactly the batches it would have seen. One optimizer step consumes `world_size *
update_freq` consecutive batches; rank r takes every world_size-th of them, so each rank gets
distinct batches and the union over ranks is independent of how the step is split.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from mtrain.data.alignments import alignment_matrix
from mtrain.data.store import Split
from mtrain.errors import MtrainError
from mtrain.special import BOS, EOS, PAD


@dataclass
class Batch:
    src: torch.Tensor  # (batch, src_len) source ids + eos, padded
    tgt_in: torch.Tensor  # (batch, tgt_len) bos + target ids, padded: the decoder's input
    tgt_out: torch.Tensor  # (batch, tgt_len) target ids + eos, padded: what it must predict
    ids: np.ndarray  # sentence indices in the split
    tgt_tokens: int  # target tokens to predict (eos included), counted on the host
    align: torch.Tensor | None = None  # (batch, tgt_len, src_len) guided alignment targets (alignments.py)

    def pinned(self) -> "Batch":
        """The batch in page-locked memory, from which a copy to a GPU does not block the host."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device) -> Batch:
        """The batch on `device` (asynchronously on CUDA when the batch is pinned)."""
        non_blocking = torch.device(device).type == "cuda"
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def _map(self, move: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        align = move(self.align) if self.align is not None else None
        return Batch(move(self.src), move(self.tgt_in), move(self.tgt_out), self.ids, self.tgt_tokens, align)


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
    align = None
    if split.align is not None:  # row t: the decoder query at input position t, which predicts target piece t
        align = torch.from_numpy(
            np.stack([alignment_matrix(split.align[i], tgt_in.shape[1], src.shape[1]) for i in ids])
        )
    return Batch(
        torch.from_numpy(src),
        torch.from_numpy(tgt_in),
        torch.from_numpy(tgt_out),
        ids,
        sum(len(t) + 1 for t in tgts),
        align,
    )


def epoch_pairs(
    usable: np.ndarray, corpus: np.ndarray | None, weights: list[float], rng: np.random.Generator
) -> np.ndarray:
    """The pairs of one epoch (indices into the split; a pair may repeat).

    The epoch holds as many pairs as the usable pairs of all corpora; corpus c gets
    round(total * w_c / sum(w)) of them: all of its pairs as often as they fit, topped up by a
    random subset drawn without replacement. One corpus gets exactly its pairs, drawing nothing."""
    if corpus is None or len(weights) == 1:
        return usable
    corpus = corpus[usable]
    share = np.asarray(weights, np.float64) / sum(weights)
    wanted = np.round(share * len(usable)).astype(np.int64)
    parts = []
    for c, n in enumerate(wanted.tolist()):
        members = usable[corpus == c]
        if len(members) == 0:
            continue
        whole, rest = divmod(n, len(members))
        parts += [members] * whole + [rng.choice(members, rest, replace=False)]
    return np.concatenate(parts) if parts else usable[:0]


class TrainBatches:
    """The training batch schedule: which batches a rank sees at (epoch, step).

    `weights` (one per corpus of split.corpus) mixes several corpora; `segmentation(epoch)`,
    when given, returns the epoch's re-segmented split (subword sampling)."""

    def __init__(
        self,
        split: Split,
        max_tokens: int,
        seed: int,
        max_len: int,
        update_freq: int = 1,
        world_size: int = 1,
        rank: int = 0,
        weights: list[float] = (1.0,),
        segmentation: Callable[[int], Split] | None = None,
    ):
        self.split, self.max_tokens, self.seed, self.max_len = split, max_tokens, seed, max_len
        self.update_freq, self.world_size, self.rank = update_freq, world_size, rank
        self.weights, self.segmentation = list(weights), segmentation
        self.skipped = int(len(split) - len(self._usable(split)))  # longer than the model's positions
        self._epoch, self._batches = None, None

    def _usable(self, split: Split) -> np.ndarray:
        return np.flatnonzero((split.src.lengths < self.max_len) & (split.tgt.lengths < self.max_len))

    def batches(self, epoch: int) -> list[np.ndarray]:
        """This epoch's batches (all ranks'), drawn and shuffled from (seed, epoch)."""
        if self._epoch != epoch:
            if self.segmentation is not None:
                self.split = self.segmentation(epoch)
            rng = np.random.default_rng([self.seed, epoch])
            src_lens, tgt_lens = self.split.src.lengths, self.split.tgt.lengths
            idx = epoch_pairs(self._usable(self.split), self.split.corpus, self.weights, rng)
            # sort by target then source length; ties broken randomly so buckets vary by epoch
            order = idx[np.lexsort((rng.random(len(idx)), src_lens[idx], tgt_lens[idx]))]
            batches = token_batches(src_lens, tgt_lens, self.max_tokens, order)
            self._batches = [batches[i] for i in rng.permutation(len(batches))]
            self._epoch = epoch
        return self._batches

    def steps_in_epoch(self, epoch: int) -> int:
        """Whole optimizer steps in an epoch (a last partial step is dropped)."""
        return len(self.batches(epoch)) // (self.world_size * self.update_freq)

    def next_position(self, epoch: int, step: int, max_epochs: int = 0) -> tuple[int, int] | None:
        """(epoch, step) of the next optimizer step from `step` of `epoch`, moving on to the next
        epoch when this one is done; None once `max_epochs` (0: no limit) are done."""
        while step >= self.steps_in_epoch(epoch):
            if self.steps_in_epoch(epoch) == 0:
                raise MtrainError(
                    "the training data gives no complete step: fewer than world_size x update_freq = "
                    f"{self.world_size * self.update_freq} batches per epoch; lower train.max_tokens or "
                    "train.update_freq"
                )
            if max_epochs and epoch >= max_epochs:
                return None
            epoch, step = epoch + 1, 0
        return epoch, step

    def step(self, epoch: int, step: int) -> list[Batch]:
        """This rank's micro-batches for optimizer step `step` (0-based) of `epoch`."""
        per_step = self.world_size * self.update_freq
        group = self.batches(epoch)[step * per_step : (step + 1) * per_step]
        return [collate(self.split, ids, self.max_len) for ids in group[self.rank :: self.world_size]]


class Prefetcher:
    """Collates the next step's micro-batches on a background thread while this step trains.

    On CUDA they are also pinned there, so `Batch.to` copies overlap with compute. Requests are
    answered with exactly `TrainBatches.step(epoch, step)`; a request other than the one
    prefetched (after a resume, at an epoch's end) is simply computed on the spot."""

    def __init__(self, schedule: TrainBatches, pin: bool):
        self.schedule, self.pin = schedule, pin
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="mtrain-batches")
        self.pending: tuple[tuple[int, int], Future] | None = None

    def step(self, epoch: int, step: int) -> list[Batch]:
        ahead, self.pending = self.pending, None
        if ahead is not None and ahead[0] == (epoch, step):
            micro_batches = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].result()  # never two threads inside the schedule at once
            micro_batches = self._load(epoch, step)
        if step + 1 < self.schedule.steps_in_epoch(epoch):
            self.pending = ((epoch, step + 1), self.pool.submit(self._load, epoch, step + 1))
        return micro_batches

    def _load(self, epoch: int, step: int) -> list[Batch]:
        micro_batches = self.schedule.step(epoch, step)
        return [b.pinned() for b in micro_batches] if self.pin else micro_batches

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def eval_batches(split: Split, max_tokens: int, max_len: int) -> list[Batch]:
    """Every sentence once, in length order (no shuffling, nothing dropped)."""
    src_lens, tgt_lens = split.src.lengths, split.tgt.lengths
    order = np.lexsort((src_lens, tgt_lens))
    return [
        collate(split, ids, max_len)
        for ids in token_batches(np.minimum(src_lens, max_len), np.minimum(tgt_lens, max_len), max_tokens, order)
    ]

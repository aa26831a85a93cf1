"""Subword regularization: a new segmentation of the training data every epoch.

Kudo (2018), "Subword Regularization", section 2.2: instead of always training on the best
segmentation x* of a sentence X, sample x with probability P(x|X) ~ P(x)^alpha among the
l best segmentations under the unigram language model, so the model sees (and learns to be
robust to) the many ways a word can be split. alpha = 0 would be uniform over the l best,
large alpha tends to the best one.

The text is not read again: the prepared ids are decoded back to (normalized) sentences,
whose l-best segmentations sentencepiece computes deterministically; the draw among them is
ours, from a generator seeded with (seed, epoch, side), so an epoch's segmentation is the
same in a resumed run and on every DDP rank. (Sentencepiece's own sampling cannot be seeded
reproducibly across processes and threads, which is also why BPE-dropout is not offered.)
Validation and test data keep the best segmentation.
"""

from __future__ import annotations

import itertools
import logging
import time

import numpy as np
from sentencepiece import SentencePieceProcessor

from mtrain.data.store import IndexedArray, PreparedData, Split
from mtrain.data.tokenizer import Tokenizer
from mtrain.errors import MtrainError

log = logging.getLogger("mtrain")
NBEST = 8  # l: segmentations sampled among
CHUNK = 50_000  # sentences segmented at a time


def require_unigram(processor: SentencePieceProcessor) -> None:
    """Only a unigram model has the l-best segmentations to sample from."""
    try:
        processor.nbest_encode(["a"], out_type=int, nbest_size=2)
    except RuntimeError:
        raise MtrainError(
            "tokenizer.sampling_alpha samples among unigram-model segmentations, but the sentencepiece model is not a "
            "unigram model; set tokenizer.type: unigram (and prepare again) or tokenizer.sampling_alpha: 0"
        ) from None


class SubwordSampler:
    """`sampler(epoch)` -> the training split with this epoch's sampled segmentation."""

    def __init__(
        self,
        split: Split,
        src: SentencePieceProcessor,
        tgt: SentencePieceProcessor,
        tag_ids: list[int | None],
        alpha: float,
        seed: int,
    ):
        """`tag_ids`: each corpus's tag id (None: untagged), kept first in its source sentences."""
        self.split, self.src, self.tgt, self.alpha, self.seed = split, src, tgt, alpha, seed
        self.piece_scores = {id(p): np.array([p.get_score(i) for i in range(p.get_piece_size())]) for p in (src, tgt)}
        tags = np.array([-1 if t is None else t for t in tag_ids], np.int64)
        self.tag_of_pair = tags[split.corpus] if split.corpus is not None else np.full(len(split), -1)

    def __call__(self, epoch: int, text: Split | None = None) -> Split:
        """`text`: the epoch's pairs when they differ from the prepared ones (data/augment.py)."""
        started, text = time.perf_counter(), self.split if text is None else text
        split = Split(
            self._resegment(text.src, self.src, self.tag_of_pair, [self.seed, epoch, 0]),
            self._resegment(text.tgt, self.tgt, np.full(len(text), -1), [self.seed, epoch, 1]),
            text.corpus,
        )
        log.info(
            "subword sampling: epoch %d re-segmented in %.1f s (%d source, %d target tokens; best: %d, %d)",
            epoch,
            time.perf_counter() - started,
            len(split.src.data),
            len(split.tgt.data),
            len(self.split.src.data),
            len(self.split.tgt.data),
        )
        return split

    def _resegment(
        self, side: IndexedArray, processor: SentencePieceProcessor, tags: np.ndarray, seed: list[int]
    ) -> IndexedArray:
        rng = np.random.default_rng(seed)
        piece_scores = self.piece_scores[id(processor)]
        sequences = []
        for start in range(0, len(side), CHUNK):
            rows = range(start, min(start + CHUNK, len(side)))
            tagged = [tags[i] >= 0 for i in rows]
            texts = processor.decode([side[i][1:].tolist() if t else side[i].tolist() for i, t in zip(rows, tagged)])
            chosen = sample_segmentations(
                processor.nbest_encode(texts, out_type=int, nbest_size=NBEST), piece_scores, self.alpha, rng
            )
            sequences += [[int(tags[i]), *ids] if t else ids for i, t, ids in zip(rows, tagged, chosen)]
        return IndexedArray.from_sequences(sequences, side.data.dtype)


def sample_segmentations(
    nbest: list[list[list[int]]], piece_scores: np.ndarray, alpha: float, rng: np.random.Generator
) -> list[list[int]]:
    """One segmentation per sentence, drawn with probability ~ P(x)^alpha among its candidates
    (log P(x) = the sum of its pieces' log probabilities), by the Gumbel-max trick."""
    counts = np.fromiter(map(len, nbest), np.int64, count=len(nbest))
    candidates = list(itertools.chain.from_iterable(nbest))
    lengths = np.fromiter(map(len, candidates), np.int64, count=len(candidates))
    ids = np.fromiter(itertools.chain.from_iterable(candidates), np.int64, count=int(lengths.sum()))
    log_p = np.add.reduceat(np.append(piece_scores[ids], 0.0), np.cumsum(lengths) - lengths) * (lengths > 0)
    sentence = np.repeat(np.arange(len(nbest)), counts)
    key = alpha * log_p - np.log(-np.log(rng.random(len(candidates))))
    order = np.lexsort((-key, sentence))  # by sentence, best key first
    first = np.cumsum(counts) - counts
    return [candidates[i] for i in order[first].tolist()]


def subword_sampler(data: PreparedData, tokenizer: Tokenizer, alpha: float, seed: int) -> SubwordSampler | None:
    """Subword regularization (tokenizer.sampling_alpha > 0): each epoch's segmentation; None when off."""
    if not alpha:
        return None
    for processor in (tokenizer.src, tokenizer.tgt):
        require_unigram(processor)
    tag_ids = [c["tag_id"] for c in data.corpora]
    return SubwordSampler(data.split("train"), tokenizer.src, tokenizer.tgt, tag_ids, alpha, seed)

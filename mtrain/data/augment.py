"""Training-time augmentation: every epoch, some training pairs become the text users send.

A model trained only on clean, sentence-cased text breaks on UPPER CASE, Title Case, lowercase
chat and typos (it has never seen their subwords). Mozilla's pipeline fixed this with on-the-fly
modifiers (OpusTrainer's UpperCase, TitleCase, Typos); data.augment gives each modifier the
probability that a pair is changed that way, and data/noise.py defines what each change is;
data/terms.py writes soft terms into sources.

As with subword sampling, the prepared ids are not touched: each epoch, the chosen pairs are
decoded back to text, changed, and encoded again, with draws from a generator seeded by (seed,
epoch), so a resumed run and every DDP rank see the same epoch. No modifier on: no change at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from mtrain.config import AUGMENT_MODIFIERS, AugmentConfig, Config
from mtrain.data import casing, noise
from mtrain.data.store import PreparedData, Split
from mtrain.data.subword import subword_sampler
from mtrain.data.terms import annotate_pair
from mtrain.data.tokenizer import Tokenizer

log = logging.getLogger("mtrain")
CASES = ("upper", "title", "lower")  # at most one of them changes a pair
STREAM = 2  # the generator's third seed word: 0 and 1 are subword sampling's source and target


class Augmenter:
    """`augmenter(epoch)` -> the training split with this epoch's changed pairs."""

    def __init__(
        self, split: Split, tokenizer: Tokenizer, settings: list[AugmentConfig], tag_ids: list[int | None], seed: int
    ):
        """`settings` and `tag_ids`: each corpus's augmentation and tag id (None: untagged)."""
        self.split, self.tokenizer, self.seed = split, tokenizer, seed
        corpus = split.corpus if split.corpus is not None else np.zeros(len(split), np.int64)
        self.probability = {name: np.array([getattr(s, name) for s in settings])[corpus] for name in AUGMENT_MODIFIERS}
        self.term_mask = np.array([s.term_mask for s in settings])[corpus]
        self.terms_per_pair = np.array([s.terms_per_pair for s in settings])[corpus]
        self.tagged = np.array([t is not None for t in tag_ids])[corpus]

    def changes(self, epoch: int) -> dict[str, np.ndarray]:
        """Which pairs each modifier changes in this epoch: one uniform draw per pair picks at most
        one case (upper, title, lower by their probabilities), one each decides strip_punct, typos
        and terms (terms only where nothing else changes the pair)."""
        rng = np.random.default_rng([self.seed, epoch, STREAM])
        draw, masks, below = rng.random(len(self.split)), {}, 0.0
        for name in CASES:
            masks[name] = (draw >= below) & (draw < below + self.probability[name])
            below = below + self.probability[name]
        for name in ("strip_punct", "typos", "terms"):
            masks[name] = rng.random(len(self.split)) < self.probability[name]
        # a term annotation reads the prepared pieces' alignment: only pairs no other change touches
        masks["terms"] &= ~np.logical_or.reduce([masks[name] for name in AUGMENT_MODIFIERS if name != "terms"])
        return masks

    def __call__(self, epoch: int) -> Split:
        started = time.perf_counter()
        masks = self.changes(epoch)
        rows = np.flatnonzero(np.logical_or.reduce(list(masks.values())))
        sources, targets = self._texts(rows)
        rng = np.random.default_rng([self.seed, epoch, STREAM, 1])
        cases: list[str | None] = [None] * len(rows)  # the case tag of each pair (tokenizer.case_tags)
        for k, row in enumerate(rows.tolist()):
            if masks["terms"][row]:
                sources[k] = self._annotated(row, sources[k], targets[k], rng)
                continue
            change = {name: bool(mask[row]) for name, mask in masks.items()}
            if self.tokenizer.case_tags:
                cases[k] = next((name for name in casing.CASE_TAGS if change[name]), None)
            sources[k], targets[k] = change_pair(sources[k], targets[k], change, rng, self.tokenizer.case_tags)
        tagged = self.tokenizer.with_case_tag
        encoded_sources = [tagged(ids, case, "src") for ids, case in zip(self.tokenizer.encode_src(sources), cases)]
        split = Split(
            self.split.src.replaced(rows, self._with_tags(rows, encoded_sources)),
            self.split.tgt.replaced(
                rows, [tagged(ids, c, "tgt") for ids, c in zip(self.tokenizer.encode_tgt(targets), cases)]
            ),
            self.split.corpus,
        )
        counts = ", ".join(f"{name} {int(mask.sum())}" for name, mask in masks.items() if mask.any())
        log.info(
            "augmentation: epoch %d changed %d of %d pairs (%s) in %.1f s",
            epoch,
            len(rows),
            len(self.split),
            counts or "none",
            time.perf_counter() - started,
        )
        return split

    def _texts(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """The rows' sentences as text (a corpus tag left out)."""
        src, tgt = self.split.src, self.split.tgt
        sources = [src[i][1:].tolist() if self.tagged[i] else src[i].tolist() for i in rows.tolist()]
        targets = [tgt[i].tolist() for i in rows.tolist()]
        return self.tokenizer.decode_src_batch(sources), self.tokenizer.decode_tgt_batch(targets)

    def _annotated(self, row: int, source: str, target: str, rng: np.random.Generator) -> str:
        """The source with a soft term (data/terms.py), from the prepared pair's alignment."""
        src, tgt, tag = self.split.src[row], self.split.tgt[row], int(self.tagged[row])
        links = self.split.align[row].reshape(-1, 2) - [tag, 0]  # positions without the corpus tag
        source_pieces = [self.tokenizer.src_piece(int(t)) for t in src[tag:]]
        target_pieces = [self.tokenizer.tgt_piece(int(t)) for t in tgt]
        links = links[links[:, 0] >= 0]
        mask, count = float(self.term_mask[row]), int(self.terms_per_pair[row])
        return annotate_pair(source, target, source_pieces, target_pieces, links, rng, mask, count)

    def _with_tags(self, rows: np.ndarray, encoded: list[list[int]]) -> list[list[int]]:
        src = self.split.src
        return [[int(src[i][0]), *ids] if self.tagged[i] else ids for i, ids in zip(rows.tolist(), encoded)]


def change_pair(
    source: str, target: str, change: dict[str, bool], rng: np.random.Generator, case_tags: bool = False
) -> tuple[str, str]:
    """A pair after the changes `change` selects (names of AUGMENT_MODIFIERS), in their fixed order:
    the case, then the final punctuation, then typos. With `case_tags`, upper and title leave the
    target as it is and the source in sentence case, as the model reads them (data/casing.py; the
    caller adds the tags)."""
    if case_tags and (change["upper"] or change["title"]):
        source = casing.sentence_cased(source)
    elif change["upper"]:
        source, target = noise.upper(source), noise.upper(target)
    elif change["title"]:
        source, target = noise.title(source), noise.title(target)
    elif change["lower"]:
        source = noise.lower(source)
    if change["strip_punct"]:
        source, target = noise.strip_final_punctuation(source), noise.strip_final_punctuation(target)
    if change["typos"]:
        source = noise.typos(source, rng)
    return source, target


def training_text(config: Config, data: PreparedData, tokenizer: Tokenizer) -> Callable[[int], Split] | None:
    """Each epoch's training split: augmented (data.augment), then re-segmented (subword sampling);
    None when neither is on, and every epoch trains on the prepared split as it is."""
    d, seed = config.data, config.train.seed
    settings = d.corpus_augments()
    augmenter = None
    if any(s.is_on() for s in settings):
        tag_ids = [c["tag_id"] for c in data.corpora]
        augmenter = Augmenter(data.split("train"), tokenizer, settings, tag_ids, seed)
    sampler = subword_sampler(data, tokenizer, config.tokenizer.sampling_alpha, seed)
    if augmenter is None:
        return sampler
    if sampler is None:
        return augmenter
    return lambda epoch: sampler(epoch, augmenter(epoch))

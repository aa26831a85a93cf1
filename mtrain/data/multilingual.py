"""Several language pairs in one model: what prepare and training do differently for them.

One model learns every direction of its training corpora (Johnson et al., 2017, "Google's
Multilingual Neural Machine Translation System"): when it translates into more than one language,
every source starts with the token of its target language, `>>deu<<` as OPUS-MT's Marian models
write it (data/languages.py), a user-defined piece of the sentencepiece model, never split. The
shared sentencepiece model trains on the same number of sentences of every language, so that a
large pair does not take the small pairs' pieces. An epoch mixes the pairs by temperature
sampling (data.temperature; Arivazhagan et al., 2019): pair d's share is proportional to
n_d^(1/T). Validation and test sets are read once per direction, into splits of their own
(`valid.en-fr`).

A bilingual config (one direction) leaves every file and name as it was.
"""

from __future__ import annotations

import numpy as np

from mtrain.config import DataConfig
from mtrain.data.languages import language_token, token_code

TRAIN_SIDES = ("src", "tgt")  # the training files' names when they hold several language pairs


def target_token(lang: str) -> str:
    """The token that asks a multilingual model for `lang`: >>deu<< for de."""
    return language_token(token_code(lang))


def several_pairs(d: DataConfig) -> bool:
    return len(d.directions()) > 1


def language_tokens(d: DataConfig) -> list[str]:
    """The target-language tokens of a multilingual model, one per target language ([] otherwise)."""
    if not d.is_multilingual():
        return []
    return list(dict.fromkeys(target_token(tgt) for _, tgt in d.directions()))


def source_prefixes(d: DataConfig) -> list[list[str]]:
    """The pieces each training corpus puts before its sources: its target-language token (a
    multilingual model), then its tag (e.g. <BT>)."""
    return [
        ([target_token(d.direction(c)[1])] if d.is_multilingual() else []) + ([c.tag] if c.tag else []) for c in d.train
    ]


def train_sides(d: DataConfig) -> tuple[str, str]:
    """The language names of the training split's two files (train.en, train.de; or train.src, train.tgt)."""
    return TRAIN_SIDES if several_pairs(d) else (d.src_lang, d.tgt_lang)


def reference_splits(d: DataConfig, section: str) -> list[tuple[str, str, str]]:
    """(split name, source language, target language) of a valid/test section: the section itself,
    or one split per direction (valid.en-fr)."""
    if not several_pairs(d):
        return [(section, d.src_lang, d.tgt_lang)]
    return [(f"{section}.{src}-{tgt}", src, tgt) for src, tgt in d.directions()]


def balanced_masks(d: DataConfig, pair_corpus: np.ndarray, size: int, joint: bool, seed: int) -> list[np.ndarray]:
    """Which source and which target sentences of the cleaned pairs sentencepiece trains on: up to
    an equal share of `size` for every language of the model (joint) or of the side, drawn with
    the seed."""
    rng = np.random.default_rng(seed)
    sides = [np.array([d.direction(c)[side] for c in d.train])[pair_corpus] for side in (0, 1)]
    if joint:
        chosen = _balanced(np.concatenate(sides), size, rng)
        return [chosen[: len(pair_corpus)], chosen[len(pair_corpus) :]]
    return [_balanced(languages, size, rng) for languages in sides]


def _balanced(languages: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A mask of up to size / (number of languages) sentences of each language in `languages`."""
    chosen = np.zeros(len(languages), bool)
    names = sorted(set(languages.tolist()))
    for language in names:
        spots = np.flatnonzero(languages == language)
        chosen[rng.choice(spots, min(len(spots), size // len(names)), replace=False)] = True
    return chosen


def corpus_weights(d: DataConfig, pairs: list[int]) -> list[float]:
    """The weights that mix the training corpora in an epoch (data/batching.epoch_pairs): with
    data.temperature T > 0, a direction's share is proportional to n^(1/T) (n: its pairs, here
    `pairs` per corpus), shared by its corpora by their weights; else the weights as given."""
    weights = [c.weight for c in d.train]
    if not d.temperature:
        return weights
    directions = [d.direction(c) for c in d.train]
    share = {}
    for direction in set(directions):
        n = sum(p for p, other in zip(pairs, directions) if other == direction)
        share[direction] = n ** (1 / d.temperature)
    total = sum(share.values())
    within = {dr: sum(w for w, other in zip(weights, directions) if other == dr) for dr in share}
    return [share[dr] / total * w / within[dr] for w, dr in zip(weights, directions)]

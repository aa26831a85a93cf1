"""The sentencepiece models of a preparation: train.init_from's, given in the config, or trained
here on a seeded sample of the cleaned training text (prepare.py's pass 1 wrote it).

The sample is drawn by us, not by sentencepiece (whose sampler was measured to differ between
processes with the same seed): a uniform sample of pairs, or with several language pairs as
many sentences of every language (data/multilingual.py). Corpus tags, target-language tokens
and term markers become user-defined pieces, never split.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import numpy as np

from mtrain.config import Config, TokenizerConfig
from mtrain.data.clean import CHUNK_PAIRS
from mtrain.data.multilingual import balanced_masks, language_tokens, several_pairs
from mtrain.data.sources import iter_line_chunks
from mtrain.data.tokenizer import load_model_file, train_model, with_case_forms
from mtrain.special import TERM_CLOSE, TERM_OPEN, TITLE_TAG, UPPER_TAG

CLEAN_TEXT = ("clean.src.txt", "clean.tgt.txt")  # the cleaned training text between prepare's two passes


def tokenizer_models(config: Config, tmp: Path, counts: list[dict], given_spm: dict | None) -> dict[str, bytes]:
    """The sentencepiece model bytes by file name: init_from's model's, given in the config, or
    trained here on a sample of the cleaned training text (`_sampled_lines`), with the corpus tags
    (and the term markers of data.augment.terms) as user-defined symbols. A joint model takes both
    sides of half as many pairs, so every model trains on tokenizer.input_sentence_size sentences
    (or all there are)."""
    if given_spm is not None:
        if given_spm["tgt"] is None:
            return {"spm.model": given_spm["src"]}
        return {"spm.src.model": given_spm["src"], "spm.tgt.model": given_spm["tgt"]}
    t, seed = config.tokenizer, config.train.seed
    tags = language_tokens(config.data) + sorted({c.tag for c in config.data.train if c.tag})
    if config.data.annotates_terms():
        tags += [TERM_OPEN, TERM_CLOSE]  # soft terms: the markers are pieces of their own
    case_tags = [UPPER_TAG, TITLE_TAG] if t.case_tags else []  # pieces of both sides' models
    src, tgt = (_sampled_lines(tmp / name, chosen) for name, chosen in zip(CLEAN_TEXT, _sample_masks(config, counts)))
    shares = case_shares(config)
    if shares is not None:
        src, tgt = (with_case_forms(lines, shares, seed) for lines in (src, tgt))
    if t.joint:
        return {
            "spm.model": load_model_file(t.model)
            if t.model
            else train_model(itertools.chain(src, tgt), t, seed, tags + case_tags)
        }
    src_model = load_model_file(t.model) if t.model else train_model(src, t, seed, tags + case_tags)
    tgt_model = load_model_file(t.tgt_model) if t.tgt_model else train_model(tgt, t, seed, case_tags)
    return {"spm.src.model": src_model, "spm.tgt.model": tgt_model}


def case_shares(config: Config) -> dict[str, float] | None:
    """With case augmentation on, the shares of UPPER and Title Case copies sentencepiece trains
    on beside its sample (the largest any corpus uses; tokenizer.with_case_variants); else None."""
    augments = config.data.corpus_augments()
    if not any(a.changes_case() for a in augments):
        return None
    tagged = config.tokenizer.case_tags  # the model reads and writes those sentences in sentence case
    return {name: 0.0 if tagged else max(getattr(a, name) for a in augments) for name in ("upper", "title")}


def _sample_masks(config: Config, counts: list[dict]) -> list[np.ndarray | None]:
    """Which cleaned source and target sentences sentencepiece trains on: a uniform sample of pairs
    (`_sample_mask`), or with several language pairs as many sentences of every language."""
    t, kept = config.tokenizer, [c["kept"] for c in counts]
    if several_pairs(config.data):
        corpus = np.repeat(np.arange(len(kept)), kept)
        return balanced_masks(config.data, corpus, t.input_sentence_size, t.joint, config.train.seed)
    return [_sample_mask(sum(kept), sample_size(t), config.train.seed)] * 2


def sample_size(t: TokenizerConfig) -> int:
    """Pairs to sample so that each model trains on tokenizer.input_sentence_size sentences."""
    return t.input_sentence_size // 2 if t.joint else t.input_sentence_size


def _sample_mask(pairs: int, size: int, seed: int) -> np.ndarray | None:
    """Which of `pairs` cleaned pairs sentencepiece trains on: a uniform sample of `size`, drawn
    from the seed (sentencepiece's own sampler was measured to differ between processes with
    the same seed), or None for all of them."""
    if pairs <= size:
        return None
    chosen = np.zeros(pairs, dtype=bool)
    chosen[np.random.default_rng(seed).choice(pairs, size, replace=False)] = True
    return chosen


def _sampled_lines(path: Path, chosen: np.ndarray | None) -> Iterator[str]:
    """The lines of `path` that `chosen` marks, streamed: memory holds one chunk, not the sample."""
    start = 0
    for chunk in iter_line_chunks(path, CHUNK_PAIRS):
        yield from chunk if chosen is None else itertools.compress(chunk, chosen[start : start + len(chunk)])
        start += len(chunk)


def needs_training(t: TokenizerConfig) -> bool:
    """Whether a sentencepiece model must be trained (none given for some side)."""
    return not t.model or (not t.joint and not t.tgt_model)

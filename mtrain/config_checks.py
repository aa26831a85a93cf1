"""Config validation: impossible values and combinations are refused, with the key and a fix,
before any work starts. Also the hard bounds on values (beam, threads, ...) other modules check
against. This module knows nothing of torch."""

from __future__ import annotations

import math
import re

from mtrain.config import (
    ACTIVATIONS,
    AUGMENT_MODIFIERS,
    DEVICES,
    POSITION_LAYOUTS,
    PRECISIONS,
    SAMPLING,
    SOFT_TERMS,
    AugmentConfig,
    Config,
    CorpusConfig,
    DataConfig,
    DecodeConfig,
    FilterConfig,
    ModelConfig,
    TokenizerConfig,
    TrainConfig,
)
from mtrain.errors import MtrainError
from mtrain.special import TERM_CLOSE, TERM_OPEN


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MtrainError(f"config: {message}")


SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")
LANGUAGE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


def _validate_corpus(c: CorpusConfig, where: str) -> None:
    kinds = [k for k in ("path", "dataset", "demo") if getattr(c, k)]
    _require(len(kinds) <= 1, f"{where} sets {' and '.join(kinds)}; set exactly one of path, dataset, demo")
    _require(c.demo >= 0, f"{where}.demo must be >= 0")
    _require(not c.data_files or c.dataset, f"{where}.data_files needs {where}.dataset (parquet, json, csv)")


def _validate_corpora(d: DataConfig) -> None:
    _require(d.train, "data.train is empty; set data.train.path, data.train.dataset or data.train.demo")
    for i, c in enumerate(d.train):
        where = f"data.train.{i}" if len(d.train) > 1 else "data.train"
        _validate_corpus(c, where)
        _require(c.is_set(), f"{where} is empty; set its path, dataset or demo")
        _require(math.isfinite(c.weight) and c.weight > 0, f"{where}.weight must be a finite number > 0")
        _require(
            not c.tag or (c.tag.split() == [c.tag] and c.tag not in SPECIAL_PIECES + (TERM_OPEN, TERM_CLOSE)),
            f"{where}.tag '{c.tag}' must be one word and not one of {', '.join(SPECIAL_PIECES)}, {TERM_OPEN}, "
            f"{TERM_CLOSE}, e.g. <BT>",
        )
        if c.augment is not None:
            _validate_augment(c.augment, f"{where}.augment")
        unknown = sorted(set(c.skip_filters) - set(FILTERS))
        _require(not unknown, f"{where}.skip_filters: {', '.join(unknown)} is not a filter ({', '.join(FILTERS)})")
        for side in ("src_lang", "tgt_lang"):
            code = getattr(c, side)
            _require(not code or LANGUAGE_CODE.fullmatch(code), f"{where}.{side} '{code}' is not a language code")
    for split in ("valid", "test"):
        c = getattr(d, split)
        _validate_corpus(c, f"data.{split}")
        _require(
            c.weight == 1.0 and not c.tag and not c.skip_filters and c.augment is None and not c.src_lang + c.tgt_lang,
            f"data.{split}: weight, tag, skip_filters, augment, src_lang and tgt_lang are for training corpora "
            "(validation and test data are never filtered or changed, and read once per language pair)",
        )
    _validate_pairs(d)
    _validate_filters(d.filters)
    _validate_augment(d.augment, "data.augment")
    _require(
        not d.annotates_terms() or d.alignments,
        "data.augment.terms annotates the words an aligner links: set data.alignments: eflomal",
    )


def _validate_pairs(d: DataConfig) -> None:
    """Several language pairs: the temperature, and what works with one pair only."""
    _require(
        math.isfinite(d.temperature) and d.temperature >= 0,
        f"data.temperature must be a finite number >= 0 (0: corpora mixed by weight alone), got {d.temperature}",
    )
    pairs = d.directions()
    same = [f"{src}->{tgt}" for src, tgt in pairs if src == tgt]
    _require(not same, f"data.train: a corpus translates {same[0] if same else ''}; give it another tgt_lang")
    _require(
        len(pairs) == 1 or not d.alignments,
        "data.alignments (guided alignment, soft terms) works with one language pair; leave it out of a config "
        "with several",
    )


def _validate_augment(a: AugmentConfig, where: str) -> None:
    for name in AUGMENT_MODIFIERS:
        value = getattr(a, name)
        _require(
            math.isfinite(value) and 0 <= value <= 1,
            f"{where}.{name} is the probability that a pair is changed: from 0 to 1, got {value}",
        )
    _require(
        math.isfinite(a.term_mask) and 0 <= a.term_mask <= 1,
        f"{where}.term_mask is the share of term annotations without their word: from 0 to 1, got {a.term_mask}",
    )
    _require(
        isinstance(a.terms_per_pair, int) and a.terms_per_pair >= 1,
        f"{where}.terms_per_pair is how many words of a pair get a term at most: 1 or more, got {a.terms_per_pair}",
    )
    _require(not a.term_mask or a.terms, f"{where}.term_mask hides annotated words: set {where}.terms above 0 too")
    _require(
        a.upper + a.title + a.lower <= 1,
        f"{where}: upper + title + lower is {a.upper + a.title + a.lower:g}, above 1 (at most one of them changes a "
        "pair); lower them",
    )


def _validate_filters(f: FilterConfig) -> None:
    for name in ("langid_threshold", "copy_similarity", "min_letters", "max_other_script"):
        value = getattr(f, name)
        _require(math.isfinite(value) and 0 <= value <= 1, f"data.filters.{name} must be from 0 to 1, got {value}")
    _require(f.copy_similarity > 0, "data.filters.copy_similarity must be > 0 (1: identical sides only)")
    _require(f.max_token_chars >= 0, "data.filters.max_token_chars must be >= 0 (0: off)")


def _validate_tokenizer(t: TokenizerConfig) -> None:
    _require(t.type in ("bpe", "unigram"), f"tokenizer.type must be bpe or unigram, got '{t.type}'")
    _require(t.vocab_size >= 8, "tokenizer.vocab_size must be at least 8")
    _require(t.input_sentence_size > 0, "tokenizer.input_sentence_size must be > 0")
    _require(0 < t.character_coverage <= 1, "tokenizer.character_coverage must be in (0, 1]")
    _require(0 <= t.sampling_alpha <= 1, "tokenizer.sampling_alpha must be in [0, 1] (0: no subword sampling)")
    _require(not t.tgt_model or not t.joint, "tokenizer.tgt_model is only used with tokenizer.joint: false")
    _require(
        not (t.case_tags and (t.model or t.tgt_model)),
        "tokenizer.case_tags needs the case tags as pieces of a sentencepiece model trained here; leave out "
        "tokenizer.model and tokenizer.tgt_model",
    )
    _require(
        not (t.case_tags and t.sampling_alpha),
        "tokenizer.case_tags and tokenizer.sampling_alpha do not combine (subword sampling would cut the tags); "
        "set one of them off",
    )


MAX_TIMEOUT_MINUTES = 7 * 24 * 60
FREEZABLE = ("embeddings", "encoder", "decoder")  # train.freeze's choices
FILTERS = ("langid", "copy", "control_chars", "min_letters", "max_other_script", "max_token_chars", "numbers")
TRAIN_FLOATS = ("lr_scale", "lr", "cooldown", "adam_beta1", "adam_beta2", "adam_eps", "label_smoothing", "clip_norm",
                "max_minutes", "save_every_minutes")  # fmt: skip


def _validate_finite(tr: TrainConfig) -> None:
    """NaN passes every comparison's negation and inf every lower bound: name them."""
    bad = [name for name in TRAIN_FLOATS if not math.isfinite(getattr(tr, name))]
    _require(
        not bad, f"train.{bad[0] if bad else ''} must be a finite number, got {getattr(tr, bad[0]) if bad else ''}"
    )


def _validate_train(tr: TrainConfig) -> None:
    """The train section's values: budgets, optimizer, schedule, intervals."""
    _require(tr.max_tokens >= 8, "train.max_tokens must be >= 8")
    _require(tr.update_freq >= 1, "train.update_freq must be >= 1")
    _require(tr.max_steps >= 1, "train.max_steps must be >= 1")
    _require(tr.warmup_steps > 0, "train.warmup_steps must be > 0")
    _require(tr.lr_scale > 0, "train.lr_scale must be > 0")
    _require(0 <= tr.lr < 1, f"train.lr must be >= 0 and below 1 (0: the paper's rate), got {tr.lr}")
    _require(
        not tr.lr or tr.lr_scale == 1.0,
        "train.lr and train.lr_scale both set the learning rate; keep one (lr: the peak, or lr_scale: the paper's "
        "rate scaled)",
    )
    _require(0 <= tr.cooldown <= 1, f"train.cooldown must be a fraction of the budget in [0, 1], got {tr.cooldown}")
    _require(0 <= tr.adam_beta1 < 1 and 0 <= tr.adam_beta2 < 1, "train.adam_beta1/adam_beta2 must be in [0, 1)")
    _require(tr.adam_eps > 0, "train.adam_eps must be > 0")
    _validate_finite(tr)
    _require(0 <= tr.seed < 2**63, f"train.seed must be in [0, 2**63), got {tr.seed}")
    _require(0 <= tr.threads <= MAX_THREADS, f"train.threads must be from 0 to {MAX_THREADS}, got {tr.threads}")
    _require(0 <= tr.label_smoothing < 1, "train.label_smoothing must be in [0, 1)")
    _require(tr.clip_norm >= 0, "train.clip_norm must be >= 0")
    _require(
        tr.device in DEVICES or tr.device.startswith("cuda:"),
        f"train.device must be one of {', '.join(DEVICES)} (or cuda:N), got '{tr.device}'",
    )
    _require(
        tr.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, got '{tr.precision}'"
    )
    _require(tr.log_every >= 1, "train.log_every must be >= 1")
    _require(tr.best_metric in ("loss", "bleu"), f"train.best_metric must be loss or bleu, got '{tr.best_metric}'")
    _require(
        tr.best_metric != "bleu" or tr.valid_bleu,
        "train.best_metric: bleu needs train.valid_bleu: true (validation BLEU is only computed then)",
    )
    _require(
        min(tr.valid_every, tr.save_every, tr.patience, tr.threads, tr.max_epochs, tr.max_minutes) >= 0,
        "train.valid_every, save_every, patience, threads, max_epochs and max_minutes must be >= 0",
    )
    _require(tr.keep_last >= 1 and tr.average_last >= 1, "train.keep_last and train.average_last must be >= 1")
    _require(
        tr.average_last <= tr.keep_last,
        f"train.average_last ({tr.average_last}) is more than train.keep_last ({tr.keep_last}) keeps; raise "
        "train.keep_last or lower train.average_last",
    )
    _require(set(tr.freeze) <= set(FREEZABLE), f"train.freeze {tr.freeze} may only name {', '.join(FREEZABLE)}")
    _require(not tr.freeze or tr.init_from, "train.freeze needs train.init_from (freezing random weights learns less)")
    _require(tr.save_every_minutes >= 0, "train.save_every_minutes must be >= 0 (0: off)")
    _require(
        math.isfinite(tr.dist_timeout_minutes) and 0 < tr.dist_timeout_minutes <= MAX_TIMEOUT_MINUTES,
        f"train.dist_timeout_minutes must be a finite number > 0 and at most {MAX_TIMEOUT_MINUTES} (a week)",
    )


def _validate_model_size(m: ModelConfig) -> None:
    """Sizes that would exhaust memory while the model is built, refused with the bound instead."""
    bounds = {
        "d_model": MAX_WIDTH,
        "d_ff": MAX_WIDTH,
        "heads": MAX_HEADS,
        "max_positions": MAX_POSITIONS,
        "encoder_layers": MAX_LAYERS,
        "decoder_layers": MAX_LAYERS,
    }
    for key, most in bounds.items():
        _require(getattr(m, key) <= most, f"model.{key} must be at most {most}, got {getattr(m, key)}")


def validate(config: Config) -> None:
    """Refuse impossible values before any work starts."""
    d, t, m, tr, dec = config.data, config.tokenizer, config.model, config.train, config.decode
    _require(config.out_dir.strip() != "", "out_dir is empty; name a run directory, e.g. out_dir: runs/my-run")
    for key in ("src_lang", "tgt_lang"):
        code = getattr(d, key)
        _require(
            bool(LANGUAGE_CODE.fullmatch(code)),
            f"data.{key} '{code}' must be a language code of letters, digits, '-' or '_' (e.g. en, pt-BR, zh_Hans): "
            "it names files",
        )
    _require(d.src_lang != d.tgt_lang, f"data.src_lang and data.tgt_lang are both '{d.src_lang}'")
    _validate_corpora(d)
    _require(1 <= d.min_len <= d.max_len, "need 1 <= data.min_len <= data.max_len")
    _require(d.max_len_ratio >= 1, "data.max_len_ratio must be >= 1")
    _validate_tokenizer(t)
    _require(
        not t.case_tags or any(a.upper or a.title for a in d.corpus_augments()),
        "tokenizer.case_tags: the model learns the tags from UPPER and Title Case pairs; set data.augment.upper "
        "or data.augment.title above 0",
    )
    _require(m.d_model > 0 and m.heads > 0, "model.d_model and model.heads must be > 0")
    _validate_model_size(m)
    _require(m.d_model % m.heads == 0, f"model.d_model ({m.d_model}) must be divisible by model.heads ({m.heads})")
    _require(m.d_model % 2 == 0, "model.d_model must be even (sinusoidal positions)")
    _require(m.encoder_layers >= 1 and m.decoder_layers >= 1, "model needs at least one encoder and one decoder layer")
    _require(m.d_ff > 0, "model.d_ff must be > 0")
    _require(
        all(0 <= p < 1 for p in (m.dropout, m.attention_dropout, m.activation_dropout)),
        "model.dropout, attention_dropout and activation_dropout must be in [0, 1)",
    )
    _require(m.tie_embeddings in ("all", "decoder", "none"), "model.tie_embeddings must be all, decoder or none")
    _require(
        m.tie_embeddings != "all" or t.joint,
        "model.tie_embeddings: all needs tokenizer.joint: true (one shared vocabulary); use decoder or none",
    )
    _require(m.max_positions >= 8, "model.max_positions must be >= 8")
    _require(
        m.activation in ACTIVATIONS, f"model.activation must be one of {', '.join(ACTIVATIONS)}, got '{m.activation}'"
    )
    _require(
        m.positions in POSITION_LAYOUTS,
        f"model.positions must be one of {', '.join(POSITION_LAYOUTS)}, got '{m.positions}'",
    )
    _validate_train(tr)
    _validate_guided_alignment(config)
    validate_decode(dec)
    augments = [a for a in d.corpus_augments() if a.terms > 0]
    _require(
        dec.soft_terms == "replace" or not augments or any(a.term_mask < 1 for a in augments),
        "data.augment.term_mask 1: the model only learns terms written in place of their source words; set "
        "decode.soft_terms: replace",
    )


ALIGNERS = ("", "eflomal")


def _validate_guided_alignment(config: Config) -> None:
    d, g, m = config.data, config.train.guided_alignment, config.model
    _require(d.alignments in ALIGNERS, f"data.alignments must be eflomal or empty (none), got '{d.alignments}'")
    _require(
        d.alignment_units in ("pieces", "words"),
        f"data.alignment_units must be pieces or words, got '{d.alignment_units}'",
    )
    _require(math.isfinite(g.weight) and g.weight >= 0, f"train.guided_alignment.weight must be >= 0, got {g.weight}")
    _require(
        0 <= g.layer <= m.decoder_layers,
        f"train.guided_alignment.layer must be from 1 to model.decoder_layers ({m.decoder_layers}), or 0 for the last",
    )
    _require(0 <= g.head < m.heads, f"train.guided_alignment.head must be from 0 to {m.heads - 1} (model.heads - 1)")
    if not g.is_on():
        return
    _require(d.alignments, "train.guided_alignment needs the training pairs' alignments: set data.alignments: eflomal")
    changed = config.tokenizer.sampling_alpha > 0 or any(a.is_on() for a in d.corpus_augments())
    _require(
        not changed,
        "train.guided_alignment reads the alignments of the prepared pieces, which tokenizer.sampling_alpha and "
        "data.augment change every epoch; turn those off",
    )


MAX_THREADS = 1024  # more OpenMP threads than any machine has cores only stalls (or exhausts) it
MAX_WIDTH = 65_536  # model.d_model / d_ff: beyond any trained Transformer, before memory runs out at start-up
MAX_HEADS = 1024
MAX_LAYERS = 1024
MAX_POSITIONS = 1_000_000  # the position table is max_positions x d_model floats
MAX_VOCABULARY = 1_048_576  # embedding rows of an imported model: far beyond any subword vocabulary
MAX_BEAM = 1024  # hypotheses per sentence; far beyond any useful beam, before memory runs out
MAX_LENPEN = 10.0  # ((5 + |Y|) / 6) ** 10 already favours length beyond any use
MIN_TEMPERATURE = 1e-6  # logits / temperature stay finite in fp32 and bf16


def validate_decode(dec: DecodeConfig) -> None:
    """Decoding settings, from a config file or from `--beam` / `--lenpen` / ... on the command line."""
    _require(1 <= dec.beam <= MAX_BEAM, f"decode.beam (--beam) must be from 1 to {MAX_BEAM}, got {dec.beam}")
    _require(
        math.isfinite(dec.lenpen) and 0 <= dec.lenpen <= MAX_LENPEN,
        f"decode.lenpen (--lenpen) must be a number from 0 to {MAX_LENPEN:g}, got {dec.lenpen:g}",
    )
    _require(
        math.isfinite(dec.max_len_a) and dec.max_len_a >= 0 and dec.max_len_b >= 1,
        "decode.max_len_a must be a finite number >= 0 and decode.max_len_b >= 1",
    )
    _require(dec.max_tokens >= 1, "decode.max_tokens (--max-tokens) must be >= 1")
    _require(
        dec.sampling in SAMPLING, f"decode.sampling (--sampling) must be topk or multinomial, got '{dec.sampling}'"
    )
    _require(dec.topk >= 1, "decode.topk (--topk) must be >= 1")
    _require(
        dec.soft_terms in SOFT_TERMS,
        f"decode.soft_terms must be {' or '.join(SOFT_TERMS)} (where soft terms go), got '{dec.soft_terms}'",
    )
    _require(
        math.isfinite(dec.temperature) and dec.temperature >= MIN_TEMPERATURE,
        f"decode.temperature (--temperature) must be a finite number >= {MIN_TEMPERATURE:g}, got {dec.temperature:g}",
    )

"""Experiment configuration: typed dataclasses and their validation (config_io.py reads YAML).

The dataclasses below are the single source of every default; the YAML files under `configs/`
only state what differs from them (or repeat them for the reader). Impossible combinations are
refused before any work starts. This module knows nothing of torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtrain.errors import MtrainError


def setting(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A config field with its help text, which the configuration reference prints
    (docs/reference/configuration.md, written by scripts/docs_reference.py)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class CorpusConfig:
    """Where one corpus comes from. Set exactly one of `path`, `dataset` or `demo`.

    `weight` and `tag` are for training corpora (data.train may be a list of them): an epoch
    draws from each corpus in proportion to its weight (a small corpus with a high weight is
    upsampled), and a tagged corpus gets its tag token (e.g. <BT> for back-translated data,
    Caswell et al. 2019) in front of every source sentence."""

    path: str = setting("", "Plain text: the files {path}.{lang} or {path}.{lang}.gz, one sentence a line.")
    dataset: str = setting(
        "", "A Hugging Face `datasets` name (wmt/wmt14) or a local loader (parquet, json, csv, arrow)."
    )
    name: str = setting("", "The `datasets` configuration name, e.g. de-en.")
    split: str = setting("", "The `datasets` split, e.g. train, validation, test.")
    data_files: list[str] = setting(factory=list, help="Local files for a loader dataset (parquet, json, csv, arrow).")
    demo: int = setting(0, "Sentence pairs from the built-in synthetic demo generator (0: not a demo corpus).")
    weight: float = setting(
        1.0,
        "Training corpora: this corpus's share of an epoch, relative to the other corpora's weights (> 1 upsamples).",
    )
    tag: str = setting(
        "", "Training corpora: a token put before every source sentence, e.g. <BT> for back-translated data."
    )

    @property
    def name_for_logs(self) -> str:
        return self.path or (f"{self.dataset} {self.name}".strip() if self.dataset else f"demo {self.demo}")

    def is_set(self) -> bool:
        return bool(self.path or self.dataset or self.demo)


@dataclass
class DataConfig:
    src_lang: str = setting(
        "en", "Source language code: the file suffix of plain-text corpora and the key in `datasets` records."
    )
    tgt_lang: str = setting("de", "Target language code, as src_lang.")
    train: list[CorpusConfig] = setting(
        factory=list, help="The training corpus (a mapping) or a list of corpora, each with its weight and tag."
    )
    valid: CorpusConfig = setting(
        factory=CorpusConfig, help="The validation corpus: validation loss, BLEU, best checkpoint, tuning."
    )
    test: CorpusConfig = setting(
        factory=CorpusConfig, help="The test corpus (optional): decoded once per final recipe, never used for choices."
    )
    dir: str = setting("", "Where prepared data goes; empty: {out_dir}/data. Runs that share it share one preparation.")
    min_len: int = setting(1, "Training-pair cleaning (as Moses clean-corpus-n): fewest words per side.")
    max_len: int = setting(250, "Training-pair cleaning: most words per side.")
    max_len_ratio: float = setting(
        9.0, "Training-pair cleaning: the longer side's words over the shorter side's, at most."
    )
    dedup: bool = setting(False, "Drop exact duplicate training pairs (validation and test are never filtered).")


@dataclass
class TokenizerConfig:
    type: str = setting("bpe", "The sentencepiece model type: bpe or unigram.")
    vocab_size: int = setting(37000, "Pieces per sentencepiece model (the paper's joint BPE: 37000 for EN-DE).")
    joint: bool = setting(
        True, "One model for both languages (the paper's shared vocabulary); false: one per language."
    )
    character_coverage: float = setting(
        1.0, "Share of the characters the model must cover (sentencepiece; lower for languages with huge alphabets)."
    )
    input_sentence_size: int = setting(
        2_000_000, "Sentences per sentencepiece model, sampled with train.seed (as Marian does)."
    )
    model: str = setting(
        "", "An existing sentencepiece model (the joint or the source one) to use instead of training one."
    )
    tgt_model: str = setting("", "An existing target sentencepiece model, with joint false.")
    sampling_alpha: float = setting(
        0.0,
        "Subword regularization (Kudo, 2018; needs type unigram): every epoch re-segments each training "
        "sentence, drawing among its best segmentations with probability ~ P(x)^alpha; 0: off.",
    )


@dataclass
class ModelConfig:
    d_model: int = setting(512, "Width of embeddings and sub-layer outputs (the paper's base: 512, big: 1024).")
    heads: int = setting(8, "Attention heads per layer; d_model must divide by it.")
    encoder_layers: int = setting(6, "Encoder layers (the paper: 6).")
    decoder_layers: int = setting(6, "Decoder layers (the paper: 6).")
    d_ff: int = setting(2048, "Inner width of the position-wise feed-forward networks (base: 2048, big: 4096).")
    dropout: float = setting(0.1, "Dropout on sub-layer outputs and on the embedding sums (section 5.4: 0.1 base).")
    attention_dropout: float = setting(
        0.0, "Dropout on attention weights (fairseq's attention_dropout; not in the paper)."
    )
    activation_dropout: float = setting(
        0.0, "Dropout on the feed-forward networks' hidden ReLU activations (fairseq's activation_dropout)."
    )
    pre_norm: bool = setting(
        False,
        "Layer normalization before each sub-layer instead of after (the paper is post-norm); trains deep "
        "models more stably.",
    )
    tie_embeddings: str = setting(
        "all",
        "Shared weights (section 3.4): all (source, target and output; needs a joint vocabulary), decoder "
        "(target and output) or none.",
    )
    max_positions: int = setting(
        1024,
        "Longest sequence in tokens the positional encodings cover (sources longer than this are truncated when"
        " translating).",
    )


DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
SAMPLING = ("", "topk", "multinomial")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    max_tokens: int = setting(
        4096, "Tokens per micro-batch on each device, padding included (the paper: about 25000 per step in all)."
    )
    update_freq: int = setting(1, "Micro-batches accumulated per optimizer step on each device.")
    max_steps: int = setting(100_000, "Stop after this many optimizer steps.")
    max_epochs: int = setting(0, "Stop after this many epochs; 0: no limit.")
    max_minutes: float = setting(0.0, "Stop after this much training wall-clock, resumed runs included; 0: no limit.")
    lr_scale: float = setting(
        1.0,
        "Factor on the paper's rate: lr = lr_scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5) (equation 3).",
    )
    warmup_steps: int = setting(4000, "Steps of linear warmup before the inverse-square-root decay (the paper: 4000).")
    cooldown: float = setting(
        0.0,
        "The last fraction of the budget (max_steps or max_minutes, whichever ends first) in which the rate "
        "falls linearly to 0 (warmup-stable-decay); 0: the paper's schedule to the end.",
    )
    adam_beta1: float = setting(0.9, "Adam beta1 (the paper: 0.9).")
    adam_beta2: float = setting(0.98, "Adam beta2 (the paper: 0.98).")
    adam_eps: float = setting(1e-9, "Adam epsilon (the paper: 1e-9).")
    label_smoothing: float = setting(0.1, "Label smoothing epsilon (section 5.4: 0.1).")
    clip_norm: float = setting(0.0, "Clip the gradient's global norm to this; 0: no clipping.")
    seed: int = setting(1, "Random seed: initialization, batch order, dropout, tokenizer sampling.")
    device: str = setting("auto", "Where to train: auto (CUDA when present), cpu, cuda or cuda:N.")
    precision: str = setting("auto", "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16 or fp16 (CUDA, loss scaling).")
    compile: bool = setting(False, "torch.compile the model (faster steps after a compile pause).")
    threads: int = setting(0, "CPU threads per process; 0: OMP_NUM_THREADS, else the CPUs this process may use.")
    log_every: int = setting(100, "Steps between training log lines and metrics.jsonl records.")
    valid_every: int = setting(1000, "Steps between validations; 0: only at the end.")
    valid_bleu: bool = setting(False, "Also greedy-decode the validation set at each validation and report its BLEU.")
    best_metric: str = setting("loss", "What checkpoint_best.pt and patience follow: loss, or bleu (needs valid_bleu).")
    patience: int = setting(0, "Stop after this many validations without a better best_metric; 0: never.")
    save_every: int = setting(1000, "Steps between numbered checkpoints; 0: only at the end.")
    save_every_minutes: float = setting(0.0, "Also refresh checkpoint_last.pt this often (minutes); 0: off.")
    keep_last: int = setting(5, "Numbered checkpoints kept; older ones are deleted.")
    average_last: int = setting(
        5, "checkpoint_avg.pt averages this many last numbered checkpoints at the end (the paper: 5 for base)."
    )
    dist_timeout_minutes: float = setting(10.0, "DDP collective timeout: a rank hung this long ends the run.")


@dataclass
class DecodeConfig:
    beam: int = setting(4, "Beam size; 1 is greedy search (the paper: 4).")
    lenpen: float = setting(
        0.6, "GNMT length penalty alpha: hypotheses rank by score / ((5 + |Y|) / 6) ** alpha (the paper: 0.6)."
    )
    max_len_a: float = setting(
        1.0, "Longest output: max_len_a * source length + max_len_b tokens (the paper: source + 50)."
    )
    max_len_b: int = setting(50, "See max_len_a.")
    max_tokens: int = setting(8000, "Source tokens times beam size per decoding batch.")
    sampling: str = setting(
        "",
        "Sampling instead of search, for back-translation (Edunov et al., 2018): '' (beam search), topk or "
        "multinomial.",
    )
    topk: int = setting(10, "With sampling topk: draw from this many most probable tokens.")
    temperature: float = setting(1.0, "Sampling temperature; < 1 sharpens the distribution, > 1 flattens it.")
    seed: int = setting(1, "Sampling seed: a line's draws depend only on it and the line's number.")


@dataclass
class Config:
    out_dir: str = setting(
        "runs/default", "The run directory: checkpoints, logs, metrics, the prepared data (unless data.dir)."
    )
    data: DataConfig = setting(factory=DataConfig, help="Corpora, languages and training-pair cleaning.")
    tokenizer: TokenizerConfig = setting(factory=TokenizerConfig, help="The sentencepiece models.")
    model: ModelConfig = setting(factory=ModelConfig, help="The Transformer's shape and regularization.")
    train: TrainConfig = setting(factory=TrainConfig, help="Batches, schedule, budgets, checkpoints.")
    decode: DecodeConfig = setting(
        factory=DecodeConfig, help="Search settings, stored with every checkpoint (mtrain tune writes its choice here)."
    )

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir) if self.data.dir else Path(self.out_dir) / "data"

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- validation


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
            not c.tag or (c.tag.split() == [c.tag] and c.tag not in SPECIAL_PIECES),
            f"{where}.tag '{c.tag}' must be one word and not one of {', '.join(SPECIAL_PIECES)}, e.g. <BT>",
        )
    for split in ("valid", "test"):
        c = getattr(d, split)
        _validate_corpus(c, f"data.{split}")
        _require(
            c.weight == 1.0 and not c.tag,
            f"data.{split}: weight and tag are for training corpora; tag the {split} source text itself if needed",
        )


def _validate_tokenizer(t: TokenizerConfig) -> None:
    _require(t.type in ("bpe", "unigram"), f"tokenizer.type must be bpe or unigram, got '{t.type}'")
    _require(t.vocab_size >= 8, "tokenizer.vocab_size must be at least 8")
    _require(t.input_sentence_size > 0, "tokenizer.input_sentence_size must be > 0")
    _require(0 < t.character_coverage <= 1, "tokenizer.character_coverage must be in (0, 1]")
    _require(0 <= t.sampling_alpha <= 1, "tokenizer.sampling_alpha must be in [0, 1] (0: no subword sampling)")
    _require(not t.tgt_model or not t.joint, "tokenizer.tgt_model is only used with tokenizer.joint: false")


MAX_TIMEOUT_MINUTES = 7 * 24 * 60
TRAIN_FLOATS = ("lr_scale", "cooldown", "adam_beta1", "adam_beta2", "adam_eps", "label_smoothing", "clip_norm",
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
    _require(tr.save_every_minutes >= 0, "train.save_every_minutes must be >= 0 (0: off)")
    _require(
        math.isfinite(tr.dist_timeout_minutes) and 0 < tr.dist_timeout_minutes <= MAX_TIMEOUT_MINUTES,
        f"train.dist_timeout_minutes must be a finite number > 0 and at most {MAX_TIMEOUT_MINUTES} (a week)",
    )


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
    _require(m.d_model > 0 and m.heads > 0, "model.d_model and model.heads must be > 0")
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
    _validate_train(tr)
    validate_decode(dec)


MAX_THREADS = 1024  # more OpenMP threads than any machine has cores only stalls (or exhausts) it
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
        math.isfinite(dec.temperature) and dec.temperature >= MIN_TEMPERATURE,
        f"decode.temperature (--temperature) must be a finite number >= {MIN_TEMPERATURE:g}, got {dec.temperature:g}",
    )

"""Experiment configuration: typed dataclasses and their validation (config_io.py reads YAML).

The dataclasses below are the single source of every default; the YAML files under `configs/`
only state what differs from them (or repeat them for the reader). Impossible combinations are
refused before any work starts. This module knows nothing of torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mtrain.errors import MtrainError


@dataclass
class CorpusConfig:
    """Where one corpus comes from. Set exactly one of `path`, `dataset` or `demo`.

    `weight` and `tag` are for training corpora (data.train may be a list of them): an epoch
    draws from each corpus in proportion to its weight (a small corpus with a high weight is
    upsampled), and a tagged corpus gets its tag token (e.g. <BT> for back-translated data,
    Caswell et al. 2019) in front of every source sentence."""

    path: str = ""  # plain text: files {path}.{lang} or {path}.{lang}.gz, one sentence a line
    dataset: str = ""  # `datasets`: a hub name (wmt/wmt14) or a local loader (parquet, json, csv, arrow)
    name: str = ""  # `datasets` config name, e.g. de-en
    split: str = ""  # `datasets` split, e.g. train, validation, test
    data_files: list[str] = field(default_factory=list)  # local files for a loader dataset
    demo: int = 0  # number of sentence pairs from the built-in synthetic demo generator
    weight: float = 1.0  # training corpora: this corpus's share of an epoch, relative to the others' weights
    tag: str = ""  # training corpora: a token put before each source sentence, e.g. <BT>

    @property
    def name_for_logs(self) -> str:
        return self.path or (f"{self.dataset} {self.name}".strip() if self.dataset else f"demo {self.demo}")

    def is_set(self) -> bool:
        return bool(self.path or self.dataset or self.demo)


@dataclass
class DataConfig:
    src_lang: str = "en"
    tgt_lang: str = "de"
    train: list[CorpusConfig] = field(default_factory=list)  # one corpus (a mapping) or a list of them
    valid: CorpusConfig = field(default_factory=CorpusConfig)
    test: CorpusConfig = field(default_factory=CorpusConfig)
    dir: str = ""  # where prepared data goes; empty means {out_dir}/data
    # Training-pair cleaning (like Moses clean-corpus-n; validation and test are never filtered).
    min_len: int = 1  # words per side
    max_len: int = 250  # words per side
    max_len_ratio: float = 9.0  # longer side / shorter side, in words
    dedup: bool = False  # drop exact duplicate pairs


@dataclass
class TokenizerConfig:
    type: str = "bpe"  # bpe | unigram
    vocab_size: int = 37000
    joint: bool = True  # one model for both languages (the paper's shared vocabulary)
    character_coverage: float = 1.0
    input_sentence_size: int = 2_000_000  # sentences per sentencepiece model, sampled with the seed (Marian's)
    model: str = ""  # an existing sentencepiece model (the joint or source one) instead of training
    tgt_model: str = ""  # an existing target model when joint is false
    # Subword regularization (Kudo 2018; needs type unigram): every epoch, each training sentence is
    # re-segmented by drawing among its best segmentations x with probability ~ P(x)^alpha.
    # 0: off, always the best segmentation.
    sampling_alpha: float = 0.0


@dataclass
class ModelConfig:
    d_model: int = 512
    heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1  # on sub-layer outputs and embeddings (section 5.4)
    attention_dropout: float = 0.0  # on attention weights (fairseq's attention_dropout; not in the paper)
    activation_dropout: float = 0.0  # on the FFN's hidden ReLU activations (fairseq's activation_dropout)
    pre_norm: bool = False  # the paper is post-norm; pre-norm trains more stably when deep
    tie_embeddings: str = "all"  # all (section 3.4, needs a joint vocabulary) | decoder | none
    max_positions: int = 1024


DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
SAMPLING = ("", "topk", "multinomial")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    max_tokens: int = 4096  # tokens per micro-batch per device, padding included
    update_freq: int = 1  # micro-batches accumulated per optimizer step on each device
    max_steps: int = 100_000
    max_epochs: int = 0  # 0: no limit
    max_minutes: float = 0.0  # stop after this much training wall-clock, resumed processes included; 0: no limit
    lr_scale: float = 1.0  # lr = lr_scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    warmup_steps: int = 4000
    # The last `cooldown` fraction of the budget (max_steps or max_minutes, whichever ends first) scales
    # the lr linearly down to 0 (the warmup-stable-decay cooldown); 0: the paper's schedule to the end
    cooldown: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-9
    label_smoothing: float = 0.1
    clip_norm: float = 0.0  # 0: no gradient clipping
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False  # torch.compile the model
    threads: int = 0  # CPU threads per process; 0: OMP_NUM_THREADS, else the CPUs this process may use
    log_every: int = 100  # steps
    valid_every: int = 1000  # steps; 0: only at the end
    valid_bleu: bool = False  # also greedy-decode the validation set and report BLEU
    best_metric: str = "loss"  # loss | bleu (needs valid_bleu): what checkpoint_best.pt and patience follow
    patience: int = 0  # stop after this many validations without a better best_metric; 0: never
    save_every: int = 1000  # steps between numbered checkpoints; 0: only at the end
    save_every_minutes: float = 0.0  # also refresh checkpoint_last.pt this often; 0: off
    keep_last: int = 5  # numbered checkpoints kept
    average_last: int = 5  # checkpoint_avg.pt averages this many last checkpoints at the end
    dist_timeout_minutes: float = 10.0  # collective-operation timeout under DDP


@dataclass
class DecodeConfig:
    beam: int = 4
    lenpen: float = 0.6  # GNMT length penalty alpha: score / ((5 + |Y|) / 6) ** alpha
    max_len_a: float = 1.0  # maximum output length = a * source length + b
    max_len_b: int = 50
    max_tokens: int = 8000  # source tokens per decoding batch
    # Sampling instead of search, for back-translation (Edunov et al. 2018): each token drawn from
    # the model's distribution (multinomial) or from its topk most probable tokens, at a temperature.
    sampling: str = ""  # "": beam search (greedy at beam 1) | topk | multinomial
    topk: int = 10
    temperature: float = 1.0
    seed: int = 1  # with the line number, what each line's draws depend on


@dataclass
class Config:
    out_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

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


def validate_decode(dec: DecodeConfig) -> None:
    """Decoding settings, from a config file or from `--beam` / `--lenpen` / ... on the command line."""
    _require(dec.beam >= 1, "decode.beam (--beam) must be >= 1")
    _require(math.isfinite(dec.lenpen) and dec.lenpen >= 0, "decode.lenpen (--lenpen) must be a finite number >= 0")
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
        math.isfinite(dec.temperature) and dec.temperature > 0,
        "decode.temperature (--temperature) must be a finite number > 0",
    )

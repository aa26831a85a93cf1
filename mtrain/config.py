"""Experiment configuration: typed dataclasses (config_checks.py validates them, config_io.py reads YAML).

The dataclasses below (and the data section's in config_data.py) are the single source of every
default; the YAML files under `configs/` only state what differs from them (or repeat them for the
reader). Impossible combinations are
refused before any work starts. This module knows nothing of torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from mtrain.config_data import (  # noqa: F401 (the data section, re-exported: mtrain.config is the whole)
    AUGMENT_MODIFIERS,
    AugmentConfig,
    CorpusConfig,
    DataConfig,
    FilterConfig,
    setting,
)


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
    case_tags: bool = setting(
        False,
        "Read a sentence in UPPER CASE or Title Case as a tag and its sentence-cased text, and write the tag "
        "before the translation, which then comes in that case (data/casing.py); data.augment.upper and title "
        "teach the tags. Needs a sentencepiece model trained here.",
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
    activation: str = setting(
        "relu",
        "The feed-forward networks' activation: relu (the paper), gelu, or swish (x * sigmoid(x), as in "
        "OPUS-MT's Marian models).",
    )
    output_bias: bool = setting(
        False, "A bias on the output projection (the paper has none; Marian's final_logits_bias is one)."
    )
    max_positions: int = setting(
        1024,
        "Longest sequence in tokens the positional encodings cover (sources longer than this are truncated when"
        " translating).",
    )
    positions: str = setting(
        "interleaved",
        "Layout of the sinusoidal table (section 3.5): interleaved (sin and cos alternate, as the paper and "
        "tensor2tensor) or halves (every sin, then every cos, as fairseq and Marian; imported Marian models).",
    )


DEVICES = ("auto", "cpu", "cuda")  # or cuda:N
ACTIVATIONS = ("relu", "gelu", "swish")
POSITION_LAYOUTS = ("interleaved", "halves")
SAMPLING = ("", "topk", "multinomial")
SOFT_TERMS = ("after", "replace")  # where --terminology soft writes a term: after its source words, or in their place
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class GuidedAlignmentConfig:
    """Guided alignment (Garg et al., 2019; Marian's --guided-alignment): a loss that pulls one
    cross-attention head toward the word alignments of the training data (data.alignments), so
    that the head aligns: translate --alignment, markup placement and the page read it."""

    weight: float = setting(
        0.0, "The alignment loss's weight beside the label-smoothed loss (Marian: 0.1, Garg et al.: 0.05); 0: off."
    )
    layer: int = setting(0, "The decoder layer (from 1) of the guided head; 0: the last.")
    head: int = setting(0, "The guided head of that layer (from 0; CTranslate2 exports read it).")

    def is_on(self) -> bool:
        return self.weight > 0


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
    lr: float = setting(
        0.0,
        "The peak learning rate, reached at the end of warmup, with the same shape: lr * min((warmup/step)^0.5, "
        "step/warmup), e.g. 5e-5 for fine-tuning; 0: the paper's rate scaled by lr_scale.",
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
        5,
        "checkpoint_avg.pt averages this many last numbered checkpoints at the end (the paper: 5 for base), "
        "leaving out those of the warmup and of the run's first half.",
    )
    dist_timeout_minutes: float = setting(10.0, "DDP collective timeout: a rank hung this long ends the run.")
    init_from: str = setting(
        "",
        "Start a new run from this model's weights and vocabulary (an mtrain checkpoint, or a Hugging Face "
        "MarianMTModel directory): continued training, fine-tuning. Adam, step, schedule and budgets start fresh.",
    )
    freeze: list[str] = setting(
        factory=list,
        help="Parts not trained (with init_from): any of embeddings, encoder, decoder. Frozen tied embeddings "
        "freeze the output projection too.",
    )
    guided_alignment: GuidedAlignmentConfig = setting(
        factory=GuidedAlignmentConfig, help="A cross-attention head trained to align words; off by default."
    )


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
    tgt_lang: str = setting(
        "",
        "Multilingual models: the language to translate into (fr, fra, ...), whose >>code<< token goes before "
        "every source; empty: as the source says. A bilingual model takes its own target language only.",
    )
    soft_terms: str = setting(
        "after",
        "How --terminology soft writes a glossary term into a source, the way the model learned it: after "
        "(`dog <t> Hund </t>`, data.augment.terms) or replace (`<t> Hund </t>` instead of the source words, "
        "data.augment.term_mask 1).",
    )


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

    # The keys ("model.d_model", ...) its YAML file and --set gave, which config_io records; None:
    # built in code, everything stated. A fine-tuning run takes the model settings it does not state
    # from the model it starts from (training.initial.inherit_model).
    stated: ClassVar[frozenset[str] | None] = None

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir) if self.data.dir else Path(self.out_dir) / "data"

    def to_dict(self) -> dict:
        return asdict(self)

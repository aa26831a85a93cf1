"""train.init_from: a new run that starts from the weights of an existing model.

Continued training and domain fine-tuning as Marian (--pretrained-model), fairseq (--restore-file
--reset-optimizer --reset-lr-scheduler) and OpenNMT (train_from, reset_optim) do them: the
weights and the vocabulary (sentencepiece models) come from the source model; Adam, the step
counter, the warmup schedule, the time budget, the best validation score and checkpoint
averaging all start fresh, from this run's config. Only the dropout values, and fewer encoder or
decoder layers, may differ from the source model's shape. The run records where it started in
every checkpoint, metrics.jsonl and the report.

Fewer layers make a student that starts from its teacher ("shrink and fine-tune", Shleifer and
Rush, 2020): it keeps the embeddings and takes evenly spaced layers of each stack, the first and
the last among them, and so starts far closer to the teacher than random weights do (the
distillation guide has the figures).

A fine-tuning config need not repeat the source's shape: what it leaves out of `model` (and
tokenizer.joint) is taken from the source (`inherit_model`), what it states is checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from mtrain.config import Config, ModelConfig
from mtrain.data.sources import file_digest
from mtrain.data.tokenizer import Tokenizer
from mtrain.errors import MtrainError
from mtrain.run import checkpoint

log = logging.getLogger("mtrain")


@dataclass(frozen=True)
class InitSource:
    """The model a run starts from: its state (a checkpoint's dict) and where it came from."""

    path: Path
    state: dict
    sha256: str

    @property
    def provenance(self) -> dict:
        """What the run records about its start: path, content hash, the source's step."""
        step = int(self.state.get("progress", {}).get("step", 0))
        return {"path": str(self.path), "source_step": step, "sha256": self.sha256}


def load_checkpoint_source(config: Config) -> InitSource:
    """train.init_from's mtrain checkpoint (`mtrain import` turns other models into one)."""
    path = Path(config.train.init_from)
    if path.is_dir():
        raise MtrainError(
            f"train.init_from {path} is a directory; give an mtrain checkpoint, or a Hugging Face MarianMTModel "
            "directory through `mtrain train` (or convert it first with `mtrain import`)"
        )
    state = checkpoint.load(path)
    return InitSource(path, state, file_digest(path))


def directory_digest(path: Path) -> str:
    """One hash over a model directory's files (names and contents), for the provenance record;
    16 hex digits of SHA-256, as `file_digest` gives for a checkpoint file."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file_digest(file).encode())
    return digest.hexdigest()[:16]


def inherit_model(config: Config, saved: dict) -> None:
    """Give `config` the model settings it does not state (and tokenizer.joint) from `saved`, the
    config of the model the run starts from, as `from_pretrained` takes a model's shape: a
    fine-tuning config names the model and the data, not d_model, heads and layers again. What it
    states is kept, and checked against the source by `check_source`. Changes `config` in place."""
    if config.stated is None:  # built in code: everything is stated
        return
    model = {k: v for k, v in saved["model"].items() if f"model.{k}" not in config.stated}
    model = {k: v for k, v in model.items() if k in ModelConfig.__dataclass_fields__}
    if model:
        config.model = dataclasses.replace(config.model, **model)
    if "tokenizer.joint" not in config.stated:
        config.tokenizer = dataclasses.replace(config.tokenizer, joint=saved["tokenizer"]["joint"])


def check_source(source: InitSource, config: Config) -> None:
    """Refuse a config that disagrees with the source model: its language pair, a tokenizer of
    its own, its shape (but for dropout)."""
    saved, where = source.state["config"], f"train.init_from {source.path}"
    pair, ours = (saved["data"]["src_lang"], saved["data"]["tgt_lang"]), (config.data.src_lang, config.data.tgt_lang)
    if pair != ours:
        raise MtrainError(
            f"{where} translates {pair[0]}->{pair[1]} but data.src_lang/tgt_lang say {ours[0]}->{ours[1]}; "
            "use the source model's language pair"
        )
    t = config.tokenizer
    if t.model or t.tgt_model:
        raise MtrainError(
            f"{where} brings its own sentencepiece model(s); remove tokenizer.model/tokenizer.tgt_model "
            "(a fine-tuning run keeps the source model's vocabulary)"
        )
    if source.state["spm"].get("vocab") and t.sampling_alpha:
        raise MtrainError(
            f"{where} is an imported model with its own vocabulary, which subword sampling cannot draw from; set "
            "tokenizer.sampling_alpha: 0"
        )
    joint = Tokenizer.from_state(source.state["spm"]).shared_ids
    if t.joint != joint:
        raise MtrainError(
            f"{where} has {'one joint' if joint else 'a source and a target'} vocabulary but the config "
            f"says tokenizer.joint: {str(t.joint).lower()}; leave tokenizer.joint out to take the source's"
        )
    free = (*checkpoint.REGULARIZATION, *LAYER_COUNTS)
    difference = checkpoint.shape_difference(saved["model"], config.model, free)
    if difference is not None:
        key, theirs, ours = difference
        raise MtrainError(
            f"{where} has model.{key}={theirs} but the config says {ours}; leave model.{key} out to take the "
            "source's (the shape must match the weights; only the dropout values and fewer layers may differ)"
        )
    for key in LAYER_COUNTS:
        theirs, ours = saved["model"][key], getattr(config.model, key)
        if ours > theirs:
            raise MtrainError(
                f"{where} has model.{key}={theirs} but the config asks for {ours}; a model started from it may "
                f"have {theirs} or fewer (it takes evenly spaced layers), not more"
            )


LAYER_COUNTS = ("encoder_layers", "decoder_layers")


def spaced_layers(source: int, kept: int) -> list[int]:
    """Which of `source` layers a `kept`-layer stack takes: evenly spaced, the first and the last
    among them (one layer: the first), as Shleifer and Rush (2020) copy a teacher into a student."""
    if kept == 1:
        return [0]
    return [round(i * (source - 1) / (kept - 1)) for i in range(kept)]


def student_weights(state: dict, model: ModelConfig) -> dict:
    """The source's weights for a model with `model`'s layer counts: the kept layers of each stack
    renumbered 0, 1, ...; everything else as it is."""
    saved = state["config"]["model"]
    renumber = {
        stack: {
            f"{stack}.{old}.": f"{stack}.{new}."
            for new, old in enumerate(spaced_layers(saved[key], getattr(model, key)))
        }
        for stack, key in (("encoder", "encoder_layers"), ("decoder", "decoder_layers"))
    }
    weights = {}
    for name, tensor in state["model"].items():
        stack = name.split(".")[0]
        if stack not in renumber:
            weights[name] = tensor
            continue
        prefix = ".".join(name.split(".")[:2]) + "."
        if prefix in renumber[stack]:
            weights[renumber[stack][prefix] + name[len(prefix) :]] = tensor
    return weights


def freeze(model: nn.Module, parts: list[str]) -> None:
    """Stop training the named parts (train.freeze): their parameters get no gradient, so Adam
    leaves them as they are. With tied embeddings, freezing them freezes the output projection
    too (it is the same tensor)."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if any(_belongs(name, part) for part in parts):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    if parts:
        log.info("frozen: %s (%d parameters)", ", ".join(parts), frozen)


def _belongs(name: str, part: str) -> bool:
    if part == "embeddings":
        return name.split(".")[0] in ("src_embed", "tgt_embed")
    return name.startswith(f"{part}.") or name.startswith(f"{part}_norm.")

"""What every export shares: the checkpoint as the exporters read it, and an output directory that
appears whole or not at all. A checkpoint becomes a CTranslate2 model (ctranslate2.py) or a
Hugging Face Marian model (huggingface.py).

Both targets are built through their own libraries' APIs, never by writing a binary format by
hand: CTranslate2 through its model specification (`TransformerSpec`) and converter, which
also quantizes; Hugging Face through `MarianConfig` / `MarianMTModel.save_pretrained` and
`MarianTokenizer`. The same weights, the same arithmetic: the tests check that each exported
model gives mtrain's greedy translations (and, for Hugging Face, mtrain's logits).

Every output directory is written under a temporary name next to its destination and renamed
at the end, so an interrupted export leaves no half-written model behind.

Layout of an exported directory, besides the engine's own files:
`source.spm` / `target.spm` (the sentencepiece models), `mtrain.json` (languages, model shape,
training step and the checkpoint's decode settings) and, for an imported model whose ids are not
the sentencepiece ids, `vocabulary.json`; so the directory alone translates.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from mtrain.data.tokenizer import VOCABULARY_FILE
from mtrain.errors import MtrainError
from mtrain.files import disk_errors, remove_stale_temporaries, temporary_name
from mtrain.run import checkpoint

EXPORT_MARKER = "mtrain.json"  # what every exported directory holds beside the engine's files


class ExportedCheckpoint:
    """What every exporter reads from a checkpoint: weights, model shape, vocabularies, settings."""

    def __init__(self, path: Path):
        state = checkpoint.load(path)
        self.weights: dict[str, torch.Tensor] = {k: v.float() for k, v in state["model"].items()}
        self.config: dict = state["config"]
        config = checkpoint.config_of(state, path)
        self.model, self.decode = config.model, config.decode
        self.src_spm: bytes = state["spm"]["src"]
        self.tgt_spm: bytes = state["spm"]["tgt"] if state["spm"]["tgt"] is not None else state["spm"]["src"]
        self.vocab: dict | None = state["spm"].get("vocab")  # an imported model's own piece-to-id vocabulary
        self.description = checkpoint.describe(state, path, "")
        tokenizer = checkpoint.tokenizer_of(state, path)
        self.joint = tokenizer.shared_ids  # one id space (an imported model may cut it with two sentencepiece models)
        # the vocabularies as sentencepiece pieces, in id order (what CTranslate2 and Marian index)
        self.src_pieces = [tokenizer.src_piece(i) for i in range(tokenizer.src_vocab_size)]
        self.tgt_pieces = [tokenizer.tgt_piece(i) for i in range(tokenizer.tgt_vocab_size)]

    def write_sidecar(self, out: Path, engine: str) -> None:
        """The sentencepiece models and mtrain.json next to the engine's files."""
        (out / "source.spm").write_bytes(self.src_spm)
        (out / "target.spm").write_bytes(self.tgt_spm)
        if self.vocab is not None:
            (out / VOCABULARY_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        (out / EXPORT_MARKER).write_text(
            json.dumps({**self.description, "engine": engine}, indent=2) + "\n", encoding="utf-8"
        )


@contextlib.contextmanager
def staged_directory(output: Path, force: bool) -> Iterator[Path]:
    """A temporary directory beside `output` that replaces it when the block succeeds; when the
    block fails, nothing is left behind and `output` is untouched."""
    tmp = _staging_dir(output, force)
    try:
        with disk_errors(f"writing {output}", "nothing was replaced there; free space and export again"):
            yield tmp
            _publish(tmp, Path(output))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _staging_dir(output: Path, force: bool) -> Path:
    """A fresh temporary directory beside `output`; refuses a non-empty `output` without --force."""
    output, here = Path(output), Path.cwd().resolve()
    if output.resolve() == here or output.resolve() in here.parents:
        raise MtrainError(f"--output {output} is the current directory or holds it; choose a new or empty directory")
    if output.exists() and not output.is_dir():
        raise MtrainError(f"--output {output} exists and is not a directory; choose another path")
    if output.is_dir() and any(output.iterdir()):
        if not force:
            raise MtrainError(
                f"--output {output} exists and is not empty; add --force to replace an earlier export there, or "
                "choose another directory"
            )
        if not (output / EXPORT_MARKER).is_file():
            raise MtrainError(
                f"--output {output} is not a directory mtrain exported (it has no {EXPORT_MARKER}): --force replaces "
                "only an earlier export; choose a new or empty directory"
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output.resolve().parent, output.resolve().name)
    tmp = temporary_name(output.resolve())
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _publish(tmp: Path, output: Path) -> None:
    """Swap the finished temporary directory into place."""
    if output.exists():
        old = temporary_name(output, "old")
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output)

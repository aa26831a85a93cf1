"""`mtrain export`: check the request, then write a CTranslate2 or Hugging Face directory."""

from __future__ import annotations

from pathlib import Path

from mtrain.deploy.ctranslate2 import DEFAULT_QUANTIZATION, check_quantization, export_ctranslate2
from mtrain.deploy.export import ExportedCheckpoint
from mtrain.deploy.huggingface import export_huggingface
from mtrain.errors import MtrainError

FORMATS = ("ctranslate2", "huggingface")


def export_command(
    checkpoint_path: Path, fmt: str, output: Path, quantization: str | None = None, force: bool = False
) -> Path:
    """`mtrain export`: check the request, then write the directory."""
    quantization = quantization or DEFAULT_QUANTIZATION
    if fmt not in FORMATS:
        raise MtrainError(f"--format '{fmt}' is not one of {', '.join(FORMATS)}")
    if fmt == "ctranslate2":
        check_quantization(quantization)
    if Path(output).resolve() in Path(checkpoint_path).resolve().parents:
        raise MtrainError(f"--output {output} holds the checkpoint being exported; choose another directory")
    ck = ExportedCheckpoint(checkpoint_path)
    if fmt == "ctranslate2":
        return export_ctranslate2(ck, output, quantization, force)
    return export_huggingface(ck, output, force)

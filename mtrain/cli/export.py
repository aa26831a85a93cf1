"""`mtrain export` (a checkpoint as a CTranslate2 or Hugging Face directory) and `mtrain import`
(a Hugging Face MarianMTModel directory as a checkpoint): the model formats in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mtrain.cli.shell import command
from mtrain.errors import MtrainError

FORMATS = ("ctranslate2", "huggingface")


def export_command(
    checkpoint_path: Path, fmt: str, output: Path, quantization: str | None = None, force: bool = False
) -> Path:
    """`mtrain export`: check the request, then write the directory."""
    from mtrain.deploy.ctranslate2 import DEFAULT_QUANTIZATION, check_quantization, export_ctranslate2
    from mtrain.deploy.export import ExportedCheckpoint
    from mtrain.deploy.huggingface import export_huggingface

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


@command(short_help="Export a model for CTranslate2 or Hugging Face.")
def export(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", metavar="FILE", help="The checkpoint to export, e.g. runs/demo/checkpoint_avg.pt."
    ),
    format: str = typer.Option(
        ...,
        "--format",
        "-f",
        metavar="FORMAT",
        help="ctranslate2 (fast CPU/GPU inference, int8) or huggingface (a transformers MarianMTModel).",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", metavar="DIR", help="The directory to write (replaced only with --force)."
    ),
    quantization: Optional[str] = typer.Option(
        None,
        metavar="TYPE",
        help="ctranslate2: int8 (default), int8_float32, int16, float32 run on any CPU; float16, bfloat16 and "
        "int8_float16 need a GPU (or a CPU that ctranslate2.get_supported_compute_types('cpu') lists them for).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
) -> None:
    """Export a checkpoint for deployment: a CTranslate2 model or a Hugging Face model directory.

    Needs the deploy extra: pip install 'mtrain[deploy]'. The directory also holds the
    sentencepiece models and mtrain.json (languages, decode settings), so it alone translates.
    """
    written = export_command(checkpoint, format, output, quantization, force)
    typer.echo(f"exported {checkpoint} as {format} to {written}")


@command("import", short_help="Import a Hugging Face Marian (OPUS-MT) model as a checkpoint.")
def import_model(
    directory: Path = typer.Argument(
        ..., metavar="DIR", help="A MarianMTModel directory: config.json, weights, vocab.json, source.spm, target.spm."
    ),
    format: str = typer.Option(
        "huggingface", "--format", "-f", metavar="FORMAT", help="What DIR holds: huggingface (a MarianMTModel)."
    ),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The checkpoint to write, e.g. model.pt."),
    src_lang: Optional[str] = typer.Option(
        None, metavar="CODE", help="Source language code (default: the tokenizer's source_lang)."
    ),
    tgt_lang: Optional[str] = typer.Option(
        None, metavar="CODE", help="Target language code (default: the tokenizer's target_lang)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
) -> None:
    """Import a Hugging Face MarianMTModel directory (an OPUS-MT model, or an mtrain export) as an
    mtrain checkpoint.

    translate, eval-bleu, tune, serve, export, ensembles and train.init_from take the result.
    Needs the deploy extra: pip install 'mtrain[deploy]'.
    """
    if format != "huggingface":
        raise MtrainError(f"--format {format}: mtrain imports huggingface (MarianMTModel) directories only")
    from mtrain.deploy.marian_import import import_huggingface

    state = import_huggingface(directory, output, src_lang, tgt_lang, force)
    data, model = state["config"]["data"], state["config"]["model"]
    typer.echo(
        f"imported {directory} ({data['src_lang']}->{data['tgt_lang']}, d_model {model['d_model']}, "
        f"{model['encoder_layers']}+{model['decoder_layers']} layers, {model['activation']}) to {output}"
    )

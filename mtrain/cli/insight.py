"""Commands that look inside a model or a run: `mtrain attention` (the attention behind one
translation), `mtrain plot metrics|positions`, `mtrain report` (one HTML page about a run)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mtrain.cli.options import DeviceOption
from mtrain.cli.shell import command, plot_app
from mtrain.errors import MtrainError


@command(short_help="Draw the attention behind one translation.")
def attention(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", metavar="FILE", help="A checkpoint, e.g. runs/demo/checkpoint_avg.pt."
    ),
    text: str = typer.Option(..., "--text", "-t", help='The sentence to translate, e.g. "A man rides a bike."'),
    output: Path = typer.Option(
        ..., "--output", "-o", metavar="FILE", help="The PNG to write (or JSON with --format json)."
    ),
    kind: str = typer.Option(
        "cross",
        metavar="cross|encoder|decoder",
        help="Which attention: cross (decoder to source), encoder or decoder self-attention.",
    ),
    layer: Optional[int] = typer.Option(None, metavar="L", help="Only this layer (from 1): its heads and their mean."),
    head: Optional[int] = typer.Option(
        None, metavar="H", help="Only this head (from 1) of --layer (default: the last layer)."
    ),
    beam: Optional[int] = typer.Option(
        None, help="Beam size for the translation (default: decode.beam of the checkpoint)."
    ),
    format: str = typer.Option(
        "png",
        "--format",
        metavar="png|json",
        help="png (heatmaps, needs mtrain[plot]) or json (the raw weights, for notebooks).",
    ),
    device: str = DeviceOption,
) -> None:
    """Translate one sentence and draw the attention that produced it, labelled with subword pieces.

    By default: the cross-attention of every layer averaged over heads, and every head of the
    last layer. Example:
    mtrain attention --checkpoint runs/demo/checkpoint_avg.pt --text "The dog sees a cat." -o attn.png
    """
    from mtrain.files import atomic_write_text
    from mtrain.inference.translator import open_translator
    from mtrain.insight.attention import KINDS, attention_maps

    if format not in ("png", "json"):
        raise MtrainError(f"--format must be png or json, got '{format}'")
    if kind not in KINDS:
        raise MtrainError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if format == "png":
        from mtrain.insight import plots

        plots.pyplot()  # a missing extra fails before the model loads
    maps = attention_maps(open_translator(checkpoint, device), text, beam)
    if format == "json":
        import json

        atomic_write_text(output, json.dumps(maps.to_json(kind)) + "\n")
    else:
        plots.save_png(plots.attention_figure(maps, kind, layer, head), output)
    typer.echo(f"{maps.translation}\nwrote {output}")


@command("metrics", short_help="Draw the learning curves of runs.", group=plot_app)
def plot_metrics(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="One or more run directories (overlaid)."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The PNG to write (1500 x 900 px)."),
) -> None:
    """Learning curves: train/valid loss, valid BLEU, lr, tokens/s against step, valid loss against time."""
    from mtrain.insight import plots

    plots.save_png(plots.metrics_figure(run_dirs), output)
    typer.echo(f"wrote {output}")


@command("positions", short_help="Draw the sinusoidal positional encodings.", group=plot_app)
def plot_positions(
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The PNG to write (1400 x 600 px)."),
    d_model: int = typer.Option(512, "--d-model", help="Model width."),
    length: int = typer.Option(100, help="Positions to draw."),
) -> None:
    """The sinusoidal positional encodings of section 3.5: the matrix and a few dimensions."""
    from mtrain.insight import plots

    plots.save_png(plots.positions_figure(d_model, length), output)
    typer.echo(f"wrote {output}")


@command(short_help="Write one HTML page about a run.")
def report(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory written by mtrain train."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The HTML page to write (self-contained)."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", metavar="FILE", help="Decode with this checkpoint (default: avg, else best, else last)."
    ),
    examples: int = typer.Option(3, help="Example translations with their attention maps."),
    max_sentences: int = typer.Option(1000, help="Test sentences to decode for the scores and speed."),
    device: str = DeviceOption,
) -> None:
    """One HTML page about a run: config, data, curves, scores with signatures, speed, examples (needs mtrain[plot])."""
    from mtrain.insight.report import report_command

    if examples < 0 or max_sentences < 1:
        raise MtrainError("--examples must be >= 0 and --max-sentences >= 1")
    used = report_command(run_dir, output, checkpoint, examples, max_sentences, device)
    typer.echo(f"wrote {output} (decoded with {used})")

"""`mtrain average`: average the weights of checkpoints (a run directory's last N or N best
validated, or listed files) into one (mtrain.run.averaging does the arithmetic)."""

from __future__ import annotations

from pathlib import Path

import typer

from mtrain.cli.shell import command


@command(short_help="Average the weights of checkpoints.")
def average(
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="RUN_DIR | CHECKPOINT...",
        help="A run directory (its last N numbered checkpoints) or checkpoint files.",
    ),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The averaged checkpoint to write."),
    last: int = typer.Option(5, help="With a run directory: how many of its last checkpoints to average (>= 1)."),
    best: int = typer.Option(
        0,
        metavar="N",
        show_default=False,
        help="With a run directory: average the N checkpoints with the best validation score "
        "(by the run's train.best_metric) instead of the last ones (default: off).",
    ),
    allow_gaps: bool = typer.Option(
        False,
        "--allow-gaps",
        help="With a run directory: average even when scheduled checkpoints are missing among the last N.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace --output even when it is a training checkpoint (its optimizer state is lost)."
    ),
) -> None:
    """Average the weights of checkpoints (the paper: last 5 for base, 20 for big)."""
    from mtrain.run.averaging import average_checkpoints

    paths = average_checkpoints(inputs, output, last, allow_gaps, best, force)
    typer.echo(f"averaged {len(paths)} checkpoint(s) into {output}: {', '.join(p.name for p in paths)}")

"""`mtrain distill`: sequence-level knowledge distillation into a student (mtrain.training.distillation
holds the distilled corpus and its record); here the teacher's engine is chosen, and the student
trained and exported."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import typer

from mtrain.cli.options import DeviceOption, PrecisionOption, SetOption, ThreadsOption
from mtrain.cli.shell import command, load_config


@command(short_help="Distill a teacher into a small student, then export it.")
def distill(
    config: Path = typer.Option(
        ..., "--config", "-c", metavar="FILE", help="The student's YAML file, e.g. configs/demo-student.yaml."
    ),
    set_: Optional[list[str]] = SetOption,
    teacher: list[Path] = typer.Option(
        ...,
        "--teacher",
        metavar="FILE",
        help="The teacher's checkpoint, e.g. runs/multi30k-en-de/checkpoint_avg.pt (repeat it for an ensemble).",
    ),
    beam: Optional[int] = typer.Option(None, help="The teacher's beam size (default: its tuned decode.beam)."),
    lenpen: Optional[float] = typer.Option(None, help="The teacher's length penalty (default: its decode.lenpen)."),
    engine: str = typer.Option(
        "auto",
        metavar="auto|torch|ctranslate2",
        help="auto: CTranslate2 for one teacher when mtrain[deploy] is installed, else mtrain's own search.",
    ),
    original_weight: float = typer.Option(
        0.0,
        metavar="W",
        show_default=False,
        help="Also train on the original pairs, each corpus weighted W against the distilled corpus's 1 "
        "(default: distilled data only).",
    ),
    export: bool = typer.Option(True, "--export/--no-export", help="Export the student to int8 CTranslate2."),
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
) -> None:
    """Sequence-level knowledge distillation (Kim and Rush, 2016): the teacher translates the training
    sources of the student's config into {out_dir}/distilled/, the student trains on them, and is
    exported to {out_dir}/ct2-int8. Running it again resumes whichever step was interrupted."""
    from mtrain.cli.export import export_command
    from mtrain.deploy.engines import open_engine
    from mtrain.training.distillation import distill_command
    from mtrain.training.session import train as run_training

    student = load_config(config, set_)
    overrides = {k: v for k, v in (("beam", beam), ("lenpen", lenpen)) if v is not None}

    def open_teacher(identity: dict):
        chosen = engine
        if engine == "auto":
            chosen = "ctranslate2" if len(teacher) == 1 and importlib.util.find_spec("ctranslate2") else "torch"
        return open_engine(teacher, None, chosen, device, precision, threads, **overrides)

    result = distill_command(
        student,
        teacher,
        open_teacher,
        run_training,
        (lambda ckpt, out: export_command(ckpt, "ctranslate2", out, "int8", force=True)) if export else None,
        original_weight,
    )
    typer.echo(f"student: {student.out_dir}" + (f"; exported to {result['exported']}" if "exported" in result else ""))

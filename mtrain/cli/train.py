"""`mtrain train`: train a model from a config, resuming when run again; with --nproc-per-node,
relaunch through torchrun (DDP)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mtrain.cli.options import ConfigOption, SetOption
from mtrain.cli.shell import command, load_config

if TYPE_CHECKING:
    from mtrain.config import Config
    from mtrain.training.initial import InitSource


@command(short_help="Train a model; running it again resumes.")
def train(
    config: Path = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    resume: Optional[Path] = typer.Option(
        None, metavar="FILE", help="Continue from this checkpoint instead of {out_dir}/checkpoint_last.pt."
    ),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Delete the run's checkpoints, metrics and TensorBoard logs and start over (other files stay).",
    ),
    recover: bool = typer.Option(
        False,
        "--recover",
        help="When checkpoint_last.pt is damaged, continue from the newest readable checkpoint_<step>.pt.",
    ),
    allow_config_change: bool = typer.Option(
        False,
        "--allow-config-change",
        help="Resume although training settings differ from the checkpoint's (recorded in metrics.jsonl).",
    ),
    device: Optional[str] = typer.Option(
        None, metavar="auto|cpu|cuda", help="Where to train (default: train.device of the config)."
    ),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads per process (default: train.threads; 0: the CPUs this process may use)."
    ),
    nproc_per_node: int = typer.Option(
        1,
        "--nproc-per-node",
        help="Start this many processes through torchrun (DDP: one per GPU, or CPU processes with gloo).",
    ),
) -> None:
    """Train a model (preparing the data first if needed); re-running resumes.

    Writes config.yaml, metrics.jsonl and checkpoints (checkpoint_last.pt, checkpoint_<step>.pt,
    checkpoint_best.pt, checkpoint_avg.pt) into out_dir. Ctrl-C or SIGTERM saves and exits;
    the same command then continues where it stopped.
    """
    from mtrain import launcher

    if nproc_per_node > 1 and not launcher.launched_by_torchrun():
        argv = _without_option(sys.argv[1:], "--nproc-per-node")
        raise typer.Exit(launcher.launch(nproc_per_node, argv))
    overrides = (
        list(set_ or [])
        + ([f"train.device={device}"] if device else [])
        + ([f"train.threads={threads}"] if threads is not None else [])
    )
    from mtrain.training.session import train as run_training

    resume = str(resume) if resume else None
    options = {"restart": restart, "recover": recover, "allow_config_change": allow_config_change}
    result = run_training(load_config(config, overrides), resume=resume, load_init=load_init_source, **options)
    if int(os.environ.get("RANK", "0")) == 0 and result["valid"]:
        numbers = {k: v for k, v in result["valid"].items() if k != "directions"}
        typer.echo("final validation: " + " ".join(f"{k} {v:.3f}" for k, v in numbers.items()))


def load_init_source(config: "Config") -> "InitSource":
    """train.init_from's model: an mtrain checkpoint, or a MarianMTModel directory imported on the fly."""
    if Path(config.train.init_from).is_dir():
        from mtrain.deploy.marian_import import marian_init_source

        return marian_init_source(config.train.init_from, config.data.src_lang, config.data.tgt_lang)
    from mtrain.training.initial import load_checkpoint_source

    return load_checkpoint_source(config)


def _without_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out

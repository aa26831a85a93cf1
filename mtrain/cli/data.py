"""`mtrain data get NAME`: the public corpora the recipes read, downloaded and checked
(mtrain.data.download)."""

from __future__ import annotations

from pathlib import Path

import typer

from mtrain.cli.shell import ReadableGroup, app, command
from mtrain.errors import MtrainError

data_app = typer.Typer(cls=ReadableGroup, help="Get the public corpora the recipes read.", no_args_is_help=True)
app.add_typer(data_app, name="data", short_help="Get the public corpora the recipes read (Multi30K).")


@command("get", short_help="Download a corpus into a local folder, checked; resumes.", group=data_app)
def get(
    name: str = typer.Argument(..., metavar="NAME", help="The corpus: multi30k."),
    directory: Path = typer.Option(
        Path("data"), "--dir", metavar="DIR", help="Where corpora go: DIR/NAME/ (the recipes' configs read data/)."
    ),
) -> None:
    """Download a corpus into DIR/NAME/ with a SHA-256 check of every file. A file already there and
    whole is kept (so files put there by hand are checked, not downloaded); an interrupted download
    resumes. Example: mtrain data get multi30k"""
    from mtrain.data.download import DATASETS, get_dataset

    if name not in DATASETS:
        raise MtrainError(f"no corpus '{name}'; mtrain data get knows: {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    counts = get_dataset(dataset, directory / name)
    typer.echo(
        f"{name}: {len(dataset.files)} files in {directory / name} ({counts['downloaded']} downloaded, "
        f"{counts['present']} already there)"
    )

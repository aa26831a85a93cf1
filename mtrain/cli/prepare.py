"""`mtrain prepare`: read, clean, tokenize and binarize the data of a config (or, with --dry-run,
show what cleaning and the filters would drop)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mtrain.cli.options import ConfigOption, SetOption
from mtrain.cli.shell import command, load_config

if TYPE_CHECKING:
    from mtrain.config import Config


@command(short_help="Read, clean, tokenize and binarize the data of a config.")
def prepare(
    config: Path = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Only show what cleaning and data.filters would drop (counts, examples); write nothing.",
    ),
) -> None:
    """Read, clean, tokenize (sentencepiece) and binarize the data of a config.

    Writes {out_dir}/data (or data.dir). Does nothing when the config and inputs are unchanged;
    `mtrain train` runs this step itself.
    """
    from mtrain.cli.train import load_init_source
    from mtrain.data.prepare import prepare as prepare_data
    from mtrain.run.directory import RunLock

    config = load_config(config, set_)
    if dry_run:
        return _show_dry_run(config)
    given_spm = load_init_source(config).state["spm"] if config.train.init_from else None
    with RunLock(Path(config.out_dir)):  # not under a training run's feet
        data = prepare_data(config, given_spm=given_spm)
    for split, counts in data.manifest["splits"].items():
        typer.echo(
            f"{split}: {counts['pairs']} pairs, {counts['src_tokens']} source and {counts['tgt_tokens']} target tokens"
        )


def _show_dry_run(config: "Config") -> None:
    """`prepare --dry-run`: per training corpus what is read, dropped (by reason) and kept; a few
    dropped pairs per filter."""
    from mtrain.data.clean import dry_run

    counts, samples = dry_run(config)
    for spec, corpus in zip(config.data.train, counts):
        dropped = ", ".join(f"{k} {v}" for k, v in corpus.items() if k not in ("input", "kept"))
        typer.echo(f"{spec.name_for_logs}: {corpus['input']} pairs in, {corpus['kept']} kept; dropped: {dropped}")
    for name, pairs in samples.items():
        if pairs:
            typer.echo(f"dropped by {name}, e.g.:")
            typer.echo("".join(f"  {src} ||| {tgt}\n" for src, tgt in pairs), nl=False)

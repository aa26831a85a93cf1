"""The shell of the `mtrain` command line: the Typer app, its readable --help, and the one place
where user errors become one line.

A user error (`MtrainError`) is printed as `error: ...` on stderr with exit status 2 and no
traceback; an interrupt (Ctrl-C, SIGTERM) exits with status 130 after cleaning up; a full or
read-only disk is one line too. Anything else is a bug and keeps its traceback. Each command's
room (mtrain/cli/<command>.py) registers itself with `command`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mtrain import __version__
from mtrain.errors import Interrupted, MtrainError
from mtrain.files import DISK_ERRORS

if TYPE_CHECKING:
    from mtrain.config import Config


COMMAND_ORDER = ["data", "prepare", "train", "translate", "distill", "tune", "eval-bleu", "eval-robustness", "export",
                 "import", "serve", "average", "attention", "report", "plot", "metrics", "positions"]  # fmt: skip


class ReadableGroup(typer.core.TyperGroup):
    """Typer's command group, with --help texts a newcomer can follow: Typer prints Python types as
    placeholders (`--last <int>`, `FILES <list[Path]>`, `{FILES}...`); here every option gets a
    plain one (N, X, TEXT) and an argument shows its metavar alone."""

    def list_commands(self, ctx: object) -> list[str]:
        """The commands in the order of the work: data, training, decoding, deployment, insight."""
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: COMMAND_ORDER.index(name) if name in COMMAND_ORDER else len(names))

    def get_command(self, ctx: object, name: str) -> object:
        command = super().get_command(ctx, name)
        for param in getattr(command, "params", []):
            if param.param_type_name == "option" and param.metavar is None and not param.is_flag:
                param.metavar = {"int": "N", "float": "X"}.get(param.bare_type(), "TEXT")
            elif param.param_type_name == "argument" and param.metavar:
                usage = param.metavar + ("..." if param.nargs != 1 and not param.metavar.endswith("...") else "")
                param.display_type_rich = lambda ctx: None  # no `<list[Path]>` after the name
                param._usage_display_name = lambda usage=usage: usage  # no `{NAME}...` in the usage line
        return command


app = typer.Typer(
    cls=ReadableGroup,
    help="Train, decode and score Transformer translation models from one YAML config.\n\n"
    "Quick start: mtrain train --config configs/demo.yaml, then mtrain translate --checkpoint "
    "runs/demo/checkpoint_avg.pt",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

plot_app = typer.Typer(
    cls=ReadableGroup,
    help="Draw learning curves or the positional encodings (needs mtrain[plot]).",
    no_args_is_help=True,
)
app.add_typer(plot_app, name="plot", short_help="Draw learning curves or positional encodings.")


def command(name: str | None = None, *, short_help: str, group: typer.Typer = app) -> Callable:
    """Register a command function with `group` (the app, or `plot`), its errors handled by `user_errors`."""

    def register(function: Callable) -> Callable:
        return group.command(name, short_help=short_help)(user_errors(function))

    return register


def load_config(path: Path, overrides: list[str] | None) -> Config:
    """The experiment's YAML file with its --set overrides, validated."""
    from mtrain.config_io import load_config as load

    return load(path, overrides or [])


def _setup_logging() -> None:
    """mtrain's log lines on stderr: INFO on rank 0, warnings only on the other ranks. The handler is
    bound to the stderr of the moment, so a command run in-process (tests) logs where its output goes."""
    rank = int(os.environ.get("RANK", "0"))
    logger = logging.getLogger("mtrain")
    for handler in [h for h in logger.handlers if getattr(h, "mtrain_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.mtrain_cli = True
    prefix = "%(asctime)s | " if rank == 0 else f"%(asctime)s | rank {rank} | "
    handler.setFormatter(logging.Formatter(prefix + "%(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def user_errors(command: Callable) -> Callable:
    """Print user errors on one line and exit non-zero, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        _setup_logging()
        try:
            with _terminate_as_interrupt():
                return command(*args, **kwargs)
        except MtrainError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except Interrupted as e:
            typer.echo(str(e), err=True)
            raise typer.Exit(130)
        except BrokenPipeError:  # `mtrain translate ... | head`
            sys.stderr.close()
            raise typer.Exit(0)
        except OSError as e:  # a full disk, a read-only or forbidden place, wherever a command writes
            if e.errno not in DISK_ERRORS:
                raise
            typer.echo(f"error: {e.filename or 'writing'}: {DISK_ERRORS[e.errno]}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:  # Ctrl-C outside training's own handler (preparing data, decoding, ...)
            typer.echo("interrupted; nothing half-written is kept: run the same command again", err=True)
            raise typer.Exit(130)

    return wrapper


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's or `kill`'s stop) unwinds like Ctrl-C: every half-written file is
    removed on the way out instead of the process dying where it stands. Training and serving
    install their own handlers (save and stop, drain) while they run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mtrain {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass

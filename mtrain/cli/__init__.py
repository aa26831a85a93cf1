"""The `mtrain` command line: one room per command (mtrain/cli/<command>.py holds its options and
what it does), the shell around them (mtrain/cli/shell.py: the app, readable help, user errors as
one line), and the options several commands share (mtrain/cli/options.py).

Importing this package loads no torch: `mtrain --help` answers at once, and each command imports
the machinery it needs when it runs.
"""

from __future__ import annotations

# the rooms register their commands with the app when imported
from mtrain.cli import (  # noqa: F401
    average,
    data,
    distill,
    evaluate,
    export,
    insight,
    prepare,
    robustness,
    serve,
    train,
    translate,
    tune,
)
from mtrain.cli.shell import app


def main() -> None:
    app()

"""Optional extras: import a package that only some commands need, or say in one line how to get it.

`pip install mtrain` stays small; CTranslate2, transformers, FastAPI, matplotlib, ... come with
the extra that needs them (`mtrain[deploy]`, `[serve]`, `[plot]`, ...). Every lazy import of
one goes through `require`, so the message a user reads is the same everywhere.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mtrain.errors import MtrainError


def install_hint(extra: str) -> str:
    """The command that installs an extra."""
    return f"pip install 'mtrain[{extra}]'"


def require(module: str, extra: str, needed_for: str = "this") -> ModuleType:
    """`module`, imported; a one-line MtrainError naming the extra when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MtrainError(f"{needed_for} needs the '{module}' package: {install_hint(extra)}") from None

"""The one exception type for user mistakes.

Raise `MtrainError` where a problem caused by the user's input is found, with the sentence the
user will read (what is wrong and how to fix it). The CLI prints it on one line and exits with
status 2. Any other exception is a bug and keeps its traceback.
"""


class MtrainError(Exception):
    """A user-facing error: bad config, missing file, malformed data, incompatible checkpoint."""


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after saving a checkpoint; the CLI exits with 130."""

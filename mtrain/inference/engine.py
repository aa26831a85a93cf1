"""The one interface every translation engine offers: mtrain's own `Translator` (PyTorch) and the
CTranslate2 engine (`mtrain.deploy.ct2_engine`). Commands, tuning, evaluation and the server take a
`TranslationEngine` and never ask which one it is; what only the PyTorch model can do (attention,
alignments, sampling) takes a `Translator`."""

from __future__ import annotations

from typing import Protocol

from mtrain.config import DecodeConfig
from mtrain.data.tokenizer import Tokenizer
from mtrain.inference.search import Hypothesis


class Progress(Protocol):
    """What the engines report progress to (a tqdm bar): `update(n)` after n more lines."""

    def update(self, n: int) -> object: ...


class TranslationEngine(Protocol):
    tokenizer: Tokenizer
    config: DecodeConfig  # the decode settings in force (the checkpoint's, with the command's overrides)
    info: dict  # what the model is: languages, shape, step (`run.checkpoint.describe`)
    max_src: int  # the longest source in tokens (positions less </s>)

    def translate_nbest(
        self,
        lines: list[str],
        beam: int | None = None,
        nbest: int = 1,
        progress: Progress | None = None,
        first_line: int = 0,
    ) -> list[list[Hypothesis]]:
        """`nbest` hypotheses for every line, in input order; an empty line gets one empty hypothesis."""
        ...

    def translate(self, lines: list[str], beam: int | None = None, progress: Progress | None = None) -> list[str]:
        """The best translation of every line, detokenized."""
        ...

    def score_tokens(self, lines: list[str], results: list[list[Hypothesis]]) -> None:
        """Give every hypothesis of `results` (translate_nbest's for `lines`) its tokens'
        log-probabilities, `Hypothesis.token_logprobs`, where the search did not (inference/confidence.py)."""
        ...

"""The Translator: text in, text out (sentencepiece, length batches, search, original order), and
loading checkpoints into one, alone or as an `Ensemble`. The searches themselves are in search.py."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mtrain.config import DecodeConfig
from mtrain.config_io import decode_config
from mtrain.data.batching import token_batches
from mtrain.data.languages import choose_target, language_token
from mtrain.data.tokenizer import Tokenizer
from mtrain.device import autocast_context, resolve_precision, select_device
from mtrain.errors import MtrainError
from mtrain.inference.constrained import constrained_beam_search, word_continuations
from mtrain.inference.engine import Progress, TranslationEngine
from mtrain.inference.ensemble import Ensemble
from mtrain.inference.search import Hypothesis, beam_search, greedy_search, line_generators
from mtrain.model.transformer import Transformer
from mtrain.run import checkpoint
from mtrain.special import EOS, PAD

log = logging.getLogger("mtrain")


def load_model(path: Path, device: torch.device) -> tuple[Transformer, Tokenizer, dict]:
    """A model ready to translate, its tokenizer, and what it is (`checkpoint.describe`)."""
    return _model_of(checkpoint.load(path, map_location="cpu"), path, device)


def _model_of(state: dict, path: Path, device: torch.device) -> tuple[Transformer, Tokenizer, dict]:
    tokenizer = checkpoint.tokenizer_of(state, path)
    model = Transformer(checkpoint.config_of(state, path).model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), tokenizer, checkpoint.describe(state, path, "torch")


def load_models(paths: list[Path], device: torch.device) -> tuple[Transformer | Ensemble, Tokenizer, dict]:
    """One checkpoint's model, or several checkpoints as one `Ensemble`. Its members must translate
    the same direction with the same sentencepiece models; the first gives the decode settings."""
    if len(paths) == 1:
        return load_model(paths[0], device)
    states = [checkpoint.load(path, map_location="cpu") for path in paths]
    first, direction = paths[0], _direction(states[0])
    for path, state in zip(paths[1:], states[1:]):
        if _direction(state) != direction:
            raise MtrainError(
                f"{path} translates {_direction(state)} but {first} translates {direction}; "
                "an ensemble's checkpoints must translate the same direction"
            )
        if state["spm"] != states[0]["spm"]:
            raise MtrainError(
                f"{path} has other sentencepiece models than {first}; an ensemble's checkpoints must share "
                "one vocabulary: train the others with the first run's data/spm.model as tokenizer.model"
            )
    loaded = [_model_of(state, path, device) for state, path in zip(states, paths)]
    info = {**loaded[0][2], "checkpoint": " + ".join(str(p) for p in paths), "ensemble": len(paths)}
    return Ensemble([model for model, _, _ in loaded]), loaded[0][1], info


def _direction(state: dict) -> str:
    data = state["config"]["data"]
    return f"{data['src_lang']}->{data['tgt_lang']}"


def encode_sources(engine: TranslationEngine, lines: list[str]) -> list[list[int]]:
    """Source token ids of each line (without </s>), the target-language token of decode.tgt_lang
    first, truncated with a warning to what the model's positions allow."""
    max_src = engine.max_src
    language = target_language(engine)
    ids = engine.tokenizer.encode_input([" ".join(line.split()) for line in lines], language)
    if not language and engine.tokenizer.target_languages and engine.tokenizer.vocab is None:
        _require_language_tokens(engine.tokenizer, ids)  # (an imported model does what transformers does)
    for i, seq in enumerate(ids):
        if len(seq) > max_src:
            log.warning(
                "line %d has %d tokens, more than the model's %d: translating its first %d",
                i + 1,
                len(seq),
                max_src,
                max_src,
            )
            ids[i] = seq[:max_src]
    return ids


def _require_language_tokens(tokenizer: Tokenizer, ids: list[list[int]]) -> None:
    """A multilingual model of mtrain's asked for no language: every line must start with a
    language token (it never saw a source without one)."""
    codes = tokenizer.target_languages
    tokens = {tokenizer.tag_id(language_token(code)) for code in codes}
    untold = next((i for i, seq in enumerate(ids) if seq and seq[0] not in tokens), None)  # (empty stays empty)
    if untold is not None:
        raise MtrainError(
            f"this model translates into {', '.join(codes)} and line {untold + 1} does not say which: give the "
            f"target language (--tgt-lang, or tgt_lang in /translate), or start each line with its token, e.g. "
            f"{language_token(codes[0])}"
        )


def target_language(engine: TranslationEngine) -> str:
    """The code of the language token that decode.tgt_lang asks for ("": none; data/languages.py)."""
    requested = engine.config.tgt_lang
    if not requested:
        return ""
    return choose_target(requested, engine.info.get("tgt_lang", ""), engine.tokenizer.target_languages)


def check_nbest(nbest: int, beam: int) -> int:
    """The beam, once n-best is known to fit in it."""
    if not 1 <= nbest <= beam:
        raise MtrainError(f"--nbest must be between 1 and the beam ({beam}), got {nbest}")
    return beam


class Translator:
    """Text in, text out: encode with sentencepiece, batch by length, search, restore order, detokenize."""

    def __init__(
        self,
        model: Transformer | Ensemble,
        tokenizer: Tokenizer,
        config: DecodeConfig,
        device: torch.device,
        precision: str = "fp32",
        info: dict | None = None,
    ):
        self.model, self.tokenizer, self.config, self.device = model, tokenizer, config, device
        self.precision = precision
        self.info = info or {}  # checkpoint.describe(): languages, shape, step
        self.max_src = model.config.max_positions - 1

    def translate_nbest(
        self,
        lines: list[str],
        beam: int | None = None,
        nbest: int = 1,
        progress: Progress | None = None,
        first_line: int = 0,
    ) -> list[list[Hypothesis]]:
        """`nbest` hypotheses for every line, in input order; an empty line gets one empty hypothesis.
        With sampling, line i's draws come from (decode.seed, first_line + i)."""
        return self._search(lines, beam, nbest, progress, first_line)

    def translate_constrained(
        self,
        lines: list[str],
        constraints: list[list[list[int]]],
        beam: int | None = None,
        nbest: int = 1,
        progress: Progress | None = None,
    ) -> list[list[Hypothesis]]:
        """As translate_nbest, each hypothesis containing its line's `constraints` (target token
        sequences) by the constrained beam search (constrained.py); a line whose constraints fit in
        no hypothesis gets an empty list."""
        return self._search(lines, beam, nbest, progress, constraints=constraints)

    def translate_attending(
        self, lines: list[str], layer: int, head: int | None, beam: int | None = None
    ) -> list[Hypothesis]:
        """The best hypothesis of every line with the cross-attention of decoder `layer` (from 1;
        `head`, or None: the mean of its heads) it was produced with (search.py's AttentionRecorder)."""
        return [hyps[0] for hyps in self._search(lines, beam, 1, attention=(layer, head))]

    def _search(
        self,
        lines: list[str],
        beam: int | None,
        nbest: int,
        progress: Progress | None = None,
        first_line: int = 0,
        constraints: list[list[list[int]]] | None = None,
        attention: tuple[int, int | None] | None = None,
    ) -> list[list[Hypothesis]]:
        c = self.config
        beam = 1 if c.sampling else check_nbest(nbest, beam or c.beam)
        ids = encode_sources(self, lines)
        continues_word = word_continuations(self.tokenizer).to(self.device) if constraints is not None else None
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0)] for _ in lines]
        todo = [i for i, seq in enumerate(ids) if seq]
        lengths = torch.tensor([len(ids[i]) + 1 for i in todo]).numpy()
        order = lengths.argsort(kind="stable")
        budget = max(c.max_tokens // beam, 1)
        for batch in token_batches(lengths, lengths, budget, order):
            rows = [todo[j] for j in batch]
            src = torch.full((len(rows), max(len(ids[r]) for r in rows) + 1), PAD, dtype=torch.long)
            for i, r in enumerate(rows):
                src[i, : len(ids[r])] = torch.tensor(ids[r])
                src[i, len(ids[r])] = EOS
            src = src.to(self.device)
            with autocast_context(self.device, self.precision):
                if constraints is not None:
                    row_constraints = [constraints[r] for r in rows]
                    found = constrained_beam_search(
                        self.model,
                        src,
                        row_constraints,
                        beam,
                        c.lenpen,
                        c.max_len_a,
                        c.max_len_b,
                        nbest,
                        continues_word,
                    )
                elif c.sampling:
                    generators = line_generators(c.seed, [first_line + r for r in rows])
                    found = [
                        [h] for h in greedy_search(self.model, src, c.max_len_a, c.max_len_b, c, generators, attention)
                    ]
                elif beam == 1:
                    found = [[h] for h in greedy_search(self.model, src, c.max_len_a, c.max_len_b, attention=attention)]
                else:
                    found = beam_search(self.model, src, beam, c.lenpen, c.max_len_a, c.max_len_b, nbest, attention)
            for r, hyps in zip(rows, found):
                results[r] = hyps
            if progress is not None:
                progress.update(len(rows))
        return results

    def translate(self, lines: list[str], beam: int | None = None, progress: Progress | None = None) -> list[str]:
        return [self.tokenizer.decode_tgt(hyps[0].tokens) for hyps in self.translate_nbest(lines, beam, 1, progress)]

    def score_tokens(self, lines: list[str], results: list[list[Hypothesis]]) -> None:
        """Nothing to do: mtrain's searches keep every token's log-probability as they go."""


def open_translator(
    path: Path | list[Path], device: str = "auto", precision: str = "auto", **overrides: object
) -> Translator:
    """A Translator for a checkpoint, or for several as an ensemble; `overrides` (beam, lenpen,
    max_tokens, ...) replace decode.* values."""
    dev = select_device(device)
    model, tokenizer, info = load_models(path if isinstance(path, list) else [path], dev)
    decode = decode_config(info["decode"], **overrides)
    return Translator(model, tokenizer, decode, dev, resolve_precision(dev, precision, "--precision"), info)

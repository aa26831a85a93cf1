"""`mtrain translate`: pick an engine, feed it lines, write one result per input line.

Two engines share one interface (`translate_nbest(lines, beam, nbest, progress)`):
- `torch`, the reference: mtrain's own batched beam search on the checkpoint (inference/);
- `ctranslate2`: the checkpoint converted once to CTranslate2 (cached, rebuilt when the
  checkpoint file changes) or a directory made by `mtrain export --format ctranslate2`.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mtrain.data.tokenizer import Tokenizer
from mtrain.device import check_threads, default_threads, keep_freed_memory, set_threads
from mtrain.errors import MtrainError
from mtrain.files import atomic_text_output, atomic_write_text
from mtrain.inference.engine import TranslationEngine
from mtrain.inference.search import Hypothesis
from mtrain.inference.translator import Translator, check_nbest, open_translator

ENGINES = ("torch", "ctranslate2")


def check_model_source(checkpoint: Path | list[Path] | None, model_dir: Path | None) -> None:
    """Exactly one of a checkpoint (or several: an ensemble) and an exported directory."""
    if (checkpoint is None or checkpoint == []) == (model_dir is None):
        raise MtrainError("give either --checkpoint FILE or --model DIR (an exported CTranslate2 directory)")


def open_engine(
    checkpoint: Path | list[Path] | None = None,
    model_dir: Path | None = None,
    engine: str = "torch",
    device: str = "auto",
    precision: str = "auto",
    threads: int = 0,
    quantization: str | None = None,
    **overrides: object,
) -> TranslationEngine:
    """A translator for a checkpoint (either engine), several checkpoints as an ensemble (torch
    engine), or an exported CTranslate2 directory. `overrides` (beam, lenpen, max_tokens, ...)
    replace the model's decode settings; `quantization` (None: ctranslate2.DEFAULT_QUANTIZATION) applies
    to a checkpoint converted for CTranslate2."""
    if engine not in ENGINES:
        raise MtrainError(f"--engine '{engine}' is not one of {', '.join(ENGINES)}")
    check_model_source(checkpoint, model_dir)
    paths = checkpoint if isinstance(checkpoint, list) else [checkpoint]
    check_threads(threads)
    if model_dir is not None or engine == "ctranslate2":
        if len(paths) > 1:
            raise MtrainError(
                "several --checkpoint (an ensemble) decode with the torch engine only; drop --engine ctranslate2"
            )
        from mtrain.deploy.ctranslate2 import DEFAULT_QUANTIZATION, cached_ctranslate2
        from mtrain.extras import require

        require("ctranslate2", "deploy")
        from mtrain.deploy.ct2_engine import CTranslate2Translator

        if model_dir is None:
            quantization = quantization or DEFAULT_QUANTIZATION
            model_dir = cached_ctranslate2(paths[0], quantization)
        elif not Path(model_dir).is_dir():
            raise MtrainError(f"--model {model_dir} is not a directory; give a directory made by mtrain export")
        translator = CTranslate2Translator(Path(model_dir), device, threads or default_threads(), **overrides)
        translator.quantization = quantization  # None: as the exported directory was written
        return translator
    set_threads(threads)
    return open_translator(paths, device, precision, **overrides)


def format_hypotheses(
    index: int, hyps: list[Hypothesis], tokenizer: Tokenizer, nbest: int, links: list[str] | None = None
) -> str:
    """One line, or with n-best exactly `nbest` lines `index ||| text ||| score` (an empty input
    line, which has one empty hypothesis, gets `nbest` empty records); with `links` (Pharaoh word
    alignments, one per hypothesis) each record ends with ` ||| i-j ...`."""
    hyps = hyps + hyps[-1:] * (nbest - len(hyps))
    tails = [f" ||| {a}" for a in links] if links is not None else []
    tails += (tails[-1:] or [""]) * (nbest - len(tails))
    if nbest == 1:
        return tokenizer.decode_tgt(hyps[0].tokens) + tails[0]
    return "\n".join(
        f"{index} ||| {tokenizer.decode_tgt(h.tokens)} ||| {h.score:.4f}{tail}" for h, tail in zip(hyps, tails)
    )


class Aligner:
    """Word alignments for `translate --alignment` (torch engine: it needs the model's attention)."""

    def __init__(self, translator: Translator, layer: int):
        from mtrain.inference.ensemble import Ensemble
        from mtrain.inference.translator import Translator
        from mtrain.insight.alignment import default_alignment_layer

        if not isinstance(translator, Translator):
            raise MtrainError(
                "--alignment needs the torch engine (it reads mtrain's own cross-attention); drop --engine "
                "ctranslate2 / --model"
            )
        if isinstance(translator.model, Ensemble):
            raise MtrainError("--alignment reads one model's cross-attention; give a single --checkpoint")
        self.translator = translator
        self.layer = layer or default_alignment_layer(len(translator.model.decoder))

    def __call__(self, lines: list[str], results: list[list[Hypothesis]]) -> list[list[str]]:
        from mtrain.insight.alignment import alignments, pharaoh

        flat = [(line, h.tokens) for line, hyps in zip(lines, results) for h in hyps]
        found = iter(alignments(self.translator, [f[0] for f in flat], [f[1] for f in flat], self.layer))
        return [[pharaoh(next(found)) for _ in hyps] for hyps in results]


def translate_command(
    translator: TranslationEngine,
    input_path: Path | None,
    output_path: Path | None,
    nbest: int = 1,
    aligner: Aligner | None = None,
) -> None:
    """A file in, a file out (atomically, with a progress bar), or stdin to stdout line by line."""
    if translator.config.sampling and nbest != 1:
        raise MtrainError("--sampling draws one translation per line; leave out --nbest")
    check_nbest(nbest, 1 if translator.config.sampling else translator.config.beam)
    if input_path is None:
        _translate_stream(translator, output_path, nbest, aligner)
        return
    keep_freed_memory()  # a batch job: the decoder's per-step buffers are reused, not mapped afresh
    from tqdm import tqdm

    from mtrain.data.sources import read_lines

    if not Path(input_path).is_file():
        raise MtrainError(f"input file not found: {input_path}")
    if output_path is not None and Path(output_path).is_dir():
        raise MtrainError(f"--output {output_path} is a directory; give a file name")
    if output_path is not None and Path(output_path).exists() and os.path.samefile(input_path, output_path):
        raise MtrainError(f"--output {output_path} is the input file; write the translations to another file")
    lines = read_lines(Path(input_path))
    with tqdm(total=len(lines), unit="sent", desc="translating", disable=None, file=sys.stderr) as bar:
        results = translator.translate_nbest(lines, nbest=nbest, progress=bar)
    text = _format_all(0, lines, results, translator, nbest, aligner)
    if output_path:
        atomic_write_text(Path(output_path), text)
    else:
        sys.stdout.write(text)


def _format_all(
    first: int,
    lines: list[str],
    results: list[list[Hypothesis]],
    translator: TranslationEngine,
    nbest: int,
    aligner: Aligner | None,
) -> str:
    links = aligner(lines, results) if aligner else [None] * len(results)
    return "".join(
        format_hypotheses(first + i, hyps, translator.tokenizer, nbest, link) + "\n"
        for i, (hyps, link) in enumerate(zip(results, links))
    )


def _translate_stream(
    translator: TranslationEngine, output_path: Path | None, nbest: int, aligner: Aligner | None = None
) -> None:
    """stdin mode: the lines already waiting are translated together (a pipe goes in batches), and a
    line typed by a person is answered at once; every answer is flushed. An --output file appears
    whole when the input ends (an interrupted or failed stream leaves no partial file)."""
    index = 0
    with atomic_text_output(output_path) if output_path else contextlib.nullcontext(sys.stdout) as out:
        for lines in waiting_lines(sys.stdin):
            results = translator.translate_nbest(lines, nbest=nbest, first_line=index)
            out.write(_format_all(index, lines, results, translator, nbest, aligner))
            out.flush()
            index += len(lines)


def waiting_lines(stream: BinaryIO, max_bytes: int = 1 << 20) -> Iterator[list[str]]:
    """Groups of complete lines: each group is what can be read without waiting (up to about
    `max_bytes`), so nothing that is already there waits for a later line, and a pipe is read in
    batches. Lines must be UTF-8; the last line needs no newline."""
    fd, pending, line_number, at_end = stream.fileno(), b"", 0, False
    while not at_end:
        chunk = os.read(fd, 1 << 16)  # waits for the next input
        at_end = not chunk
        pending += chunk
        while not at_end and len(pending) < max_bytes and select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 1 << 16)
            at_end = not chunk
            pending += chunk
        *complete, pending = pending.split(b"\n")
        if at_end and pending:
            complete, pending = complete + [pending], b""
        if complete:
            yield [_decode_line(raw, line_number + i + 1) for i, raw in enumerate(complete)]
            line_number += len(complete)


def _decode_line(raw: bytes, number: int) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise MtrainError(
            f"line {number} of the standard input is not UTF-8 text; convert the input, e.g. with iconv -t UTF-8"
        ) from None

"""`mtrain translate`: pick an engine (mtrain.deploy.engines), feed it lines, write one result per
input line: a file to a file (atomically, with a progress bar), or stdin to stdout as lines arrive.

torch and the decoders load inside the functions, so that `mtrain --help` starts at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

import typer

from mtrain.cli.options import (
    BeamOption,
    DeviceOption,
    EngineOption,
    LenpenOption,
    MaxTokensOption,
    ModelDirOption,
    PrecisionOption,
    QuantizationOption,
    ThreadsOption,
)
from mtrain.cli.shell import command
from mtrain.errors import MtrainError
from mtrain.files import atomic_text_output, atomic_write_text

if TYPE_CHECKING:
    from mtrain.data.tokenizer import Tokenizer
    from mtrain.inference.engine import TranslationEngine
    from mtrain.inference.search import Hypothesis
    from mtrain.inference.translator import Translator

Render = Callable[..., str]  # (first line number, lines, progress=None) -> their output text

SamplingOption = typer.Option(
    None,
    metavar="topk|multinomial",
    help="Draw each token at random instead of searching (back-translation): from the --topk most "
    "probable tokens, or from all. Reproducible: line i's draws depend only on (--seed, i).",
)
AlignmentOption = typer.Option(
    False,
    "--alignment",
    help="Append word alignments from the cross-attention: 'text ||| 0-0 1-2 ...' "
    "(Pharaoh i-j, source-target, from 0).",
)
FormatOption = typer.Option(
    "text",
    "--format",
    metavar="text|html|xml",
    help='html or xml: keep inline markup (tags put back around the aligned words, code and translate="no" '
    "untouched, block elements translated separately; docs/guides/markup.md).",
)
AlignmentLayerOption = typer.Option(
    0,
    metavar="L",
    show_default=False,
    help="Decoder layer (from 1) whose cross-attention aligns (default: the last, best by alignment error rate).",
)


@command(short_help="Translate text, one output line per input line.")
def translate(
    checkpoint: Optional[list[Path]] = typer.Option(
        None,
        "--checkpoint",
        metavar="FILE",
        help="A checkpoint, e.g. runs/demo/checkpoint_avg.pt. Repeat it to translate with an ensemble: "
        "the checkpoints' next-token probabilities are averaged (they must share one vocabulary).",
    ),
    model: Optional[Path] = ModelDirOption,
    input: Optional[Path] = typer.Option(
        None,
        "--input",
        "-i",
        metavar="FILE",
        help="Source text, one sentence a line (default: stdin; lines already waiting are translated together).",
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Where translations go (default: stdout); written atomically."
    ),
    beam: Optional[int] = BeamOption,
    lenpen: Optional[float] = LenpenOption,
    max_tokens: Optional[int] = MaxTokensOption,
    nbest: int = typer.Option(1, help="Print this many hypotheses per line as 'index ||| translation ||| score'."),
    sampling: Optional[str] = SamplingOption,
    topk: Optional[int] = typer.Option(None, help="Tokens to draw from with --sampling topk (default: 10)."),
    temperature: Optional[float] = typer.Option(None, help="Sampling temperature; < 1 sharpens (default: 1)."),
    seed: Optional[int] = typer.Option(None, help="Random seed of --sampling (default: 1)."),
    engine: str = EngineOption,
    quantization: Optional[str] = QuantizationOption,
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    alignment: bool = AlignmentOption,
    alignment_layer: int = AlignmentLayerOption,
    markup_format: str = FormatOption,
) -> None:
    """Translate text with a checkpoint or an exported model: one output line per input line."""
    from mtrain.data.markup import FORMATS
    from mtrain.deploy.engines import open_engine

    if markup_format not in FORMATS:
        raise MtrainError(f"--format must be one of {', '.join(FORMATS)}, got {markup_format!r}")
    if markup_format != "text" and (nbest != 1 or alignment):
        raise MtrainError(
            f"--format {markup_format} writes one translation per line with its tags; leave out --nbest and --alignment"
        )
    translator = open_engine(
        checkpoint,
        model,
        engine,
        device,
        precision,
        threads,
        quantization,
        beam=beam,
        lenpen=lenpen,
        max_tokens=max_tokens,
        sampling=sampling,
        topk=topk,
        temperature=temperature,
        seed=seed,
    )
    if markup_format != "text":
        from mtrain.insight.markup import MarkupTranslator

        markup = MarkupTranslator(translator, markup_format, alignment_layer)
        translate_command(translator, input, output, render=lambda first, lines, progress=None: _lines(markup(lines)))
        return
    translate_command(translator, input, output, nbest, Aligner(translator, alignment_layer) if alignment else None)


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
        from mtrain.insight.alignment import alignment_source

        if not isinstance(translator, Translator):
            raise MtrainError(
                "--alignment needs the torch engine (it reads mtrain's own cross-attention); drop --engine "
                "ctranslate2 / --model"
            )
        if isinstance(translator.model, Ensemble):
            raise MtrainError("--alignment reads one model's cross-attention; give a single --checkpoint")
        self.translator = translator
        self.layer, self.head = alignment_source(translator, layer)

    def __call__(self, lines: list[str], results: list[list[Hypothesis]]) -> list[list[str]]:
        from mtrain.data.alignments import pharaoh
        from mtrain.insight.alignment import alignments

        flat = [(line, h.tokens) for line, hyps in zip(lines, results) for h in hyps]
        found = iter(
            alignments(self.translator, [f[0] for f in flat], [f[1] for f in flat], self.layer, head=self.head)
        )
        return [[pharaoh(next(found)) for _ in hyps] for hyps in results]


def translate_command(
    translator: TranslationEngine,
    input_path: Path | None,
    output_path: Path | None,
    nbest: int = 1,
    aligner: Aligner | None = None,
    render: Render | None = None,
) -> None:
    """A file in, a file out (atomically, with a progress bar), or stdin to stdout line by line.
    `render(first line number, lines, progress)` makes a group of lines' output (default: the
    translations, n-best lists or alignments `format_hypotheses` writes)."""
    from mtrain.device import keep_freed_memory
    from mtrain.inference.translator import check_nbest

    if translator.config.sampling and nbest != 1:
        raise MtrainError("--sampling draws one translation per line; leave out --nbest")
    check_nbest(nbest, 1 if translator.config.sampling else translator.config.beam)
    render = render or (
        lambda first, lines, progress=None: _hypotheses(translator, first, lines, nbest, aligner, progress)
    )
    if input_path is None:
        _translate_stream(output_path, render)
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
        text = render(0, lines, bar)
    if output_path:
        atomic_write_text(Path(output_path), text)
    else:
        sys.stdout.write(text)


def _hypotheses(
    translator: TranslationEngine,
    first: int,
    lines: list[str],
    nbest: int,
    aligner: Aligner | None,
    progress: object = None,
) -> str:
    results = translator.translate_nbest(lines, nbest=nbest, progress=progress, first_line=first)
    links = aligner(lines, results) if aligner else [None] * len(results)
    return "".join(
        format_hypotheses(first + i, hyps, translator.tokenizer, nbest, link) + "\n"
        for i, (hyps, link) in enumerate(zip(results, links))
    )


def _lines(texts: list[str]) -> str:
    return "".join(text + "\n" for text in texts)


def _translate_stream(output_path: Path | None, render: Render) -> None:
    """stdin mode: the lines already waiting are translated together (a pipe goes in batches), and a
    line typed by a person is answered at once; every answer is flushed. An --output file appears
    whole when the input ends (an interrupted or failed stream leaves no partial file)."""
    index = 0
    with atomic_text_output(output_path) if output_path else contextlib.nullcontext(sys.stdout) as out:
        for lines in waiting_lines(sys.stdin):
            out.write(render(index, lines))
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

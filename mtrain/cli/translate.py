"""`mtrain translate`: pick an engine (mtrain.deploy.engines), feed it lines, write one result per
input line: a file to a file (atomically, with a progress bar), or stdin to stdout as lines arrive.

torch and the decoders load inside the functions, so that `mtrain --help` starts at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mtrain.cli import renderers
from mtrain.cli.options import (
    BeamOption,
    DeviceOption,
    EngineOption,
    LenpenOption,
    MaxTokensOption,
    ModelDirOption,
    PrecisionOption,
    QuantizationOption,
    TgtLangOption,
    ThreadsOption,
)
from mtrain.cli.renderers import Render
from mtrain.cli.shell import command
from mtrain.cli.stream import translate_stream
from mtrain.errors import MtrainError
from mtrain.files import atomic_write_text

if TYPE_CHECKING:
    from mtrain.inference.engine import TranslationEngine

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
ScoresOption = typer.Option(
    False,
    "--scores",
    help="Write each line as 'translation<TAB>confidence': in [0, 1], what it means is printed to stderr "
    "(docs/guides/confidence.md).",
)
McDropoutOption = typer.Option(
    0,
    "--mc-dropout",
    metavar="N",
    help="With --scores: the confidence from N extra passes with dropout on (Monte Carlo dropout; torch "
    "engine; about N teacher-forced passes over the output).",
)
GlossaryOption = typer.Option(
    None,
    "--glossary",
    metavar="FILE",
    help="Terms every translation must use: 'source term<TAB>target term' a line (docs/guides/terminology.md).",
)
TerminologyOption = typer.Option(
    "hard",
    metavar="hard|soft",
    help="How --glossary applies: hard: a constrained beam search puts every term in (torch engine); soft: the "
    "terms are written into the source for a model trained with data.augment.terms (every engine).",
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
    scores: bool = ScoresOption,
    mc_dropout: int = McDropoutOption,
    glossary_file: Optional[Path] = GlossaryOption,
    terminology: str = TerminologyOption,
    tgt_lang: Optional[str] = TgtLangOption,
) -> None:
    """Translate text with a checkpoint or an exported model: one output line per input line."""
    from mtrain.data.glossary import TERMINOLOGY, read_glossary
    from mtrain.data.markup import FORMATS
    from mtrain.deploy.engines import open_engine

    if markup_format not in FORMATS:
        raise MtrainError(f"--format must be one of {', '.join(FORMATS)}, got {markup_format!r}")
    if markup_format != "text" and (nbest != 1 or alignment or scores or glossary_file):
        raise MtrainError(
            f"--format {markup_format} writes one translation per line with its tags; leave out --nbest, "
            "--alignment, --scores and --glossary"
        )
    renderers.check_scores(scores, mc_dropout, nbest, alignment)
    if terminology not in TERMINOLOGY:
        raise MtrainError(f"--terminology must be one of {', '.join(TERMINOLOGY)}, got {terminology!r}")
    if terminology != "hard" and glossary_file is None:
        raise MtrainError("--terminology says how the terms of --glossary apply; add --glossary FILE")
    terms = renderers.Terms(read_glossary(glossary_file), terminology) if glossary_file is not None else None
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
        tgt_lang=tgt_lang,
    )
    renderers.check_terms(translator, terms)
    if markup_format != "text":
        render = renderers.markup_renderer(translator, markup_format, alignment_layer)
    elif scores:
        render = renderers.scored_renderer(translator, mc_dropout, terms)
    else:
        aligner = renderers.Aligner(translator, alignment_layer) if alignment else None
        render = renderers.hypotheses_renderer(translator, nbest, aligner, terms)
    translate_command(translator, input, output, nbest, render)


def translate_command(
    translator: TranslationEngine, input_path: Path | None, output_path: Path | None, nbest: int, render: Render
) -> None:
    """A file in, a file out (atomically, with a progress bar), or stdin to stdout line by line.
    `render(first line number, lines, progress)` makes a group of lines' output (renderers.py)."""
    from mtrain.device import keep_freed_memory
    from mtrain.inference.translator import check_nbest

    if translator.config.sampling and nbest != 1:
        raise MtrainError("--sampling draws one translation per line; leave out --nbest")
    check_nbest(nbest, 1 if translator.config.sampling else translator.config.beam)
    if input_path is None:
        translate_stream(output_path, render)
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

"""The `mtrain` command line: parse, call one function, turn user errors into one line.

A user error (`MtrainError`) is printed as `error: ...` on stderr with exit status 2 and no
traceback; an interrupted training run exits with status 130 after saving.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mtrain import __version__
from mtrain.deploy.serve.worker import ServeLimits
from mtrain.errors import Interrupted, MtrainError
from mtrain.files import DISK_ERRORS

if TYPE_CHECKING:
    from mtrain.config import Config
    from mtrain.training.initial import InitSource


class ReadableGroup(typer.core.TyperGroup):
    """Typer's command group, with --help texts a newcomer can follow: Typer prints Python types as
    placeholders (`--last <int>`, `FILES <list[Path]>`, `{FILES}...`); here every option gets a
    plain one (N, X, TEXT) and an argument shows its metavar alone."""

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

ConfigOption = typer.Option(
    ..., "--config", "-c", metavar="FILE", help="The experiment's YAML file, e.g. configs/demo.yaml."
)
SetOption = typer.Option(
    None,
    "--set",
    "-s",
    metavar="KEY=VALUE",
    help="Override one config value, e.g. --set train.max_steps=200 (repeatable).",
)


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


def _config(path: Path, overrides: Optional[list[str]]):
    from mtrain.config_io import load_config

    return load_config(path, overrides or [])


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


@app.command(short_help="Read, clean, tokenize and binarize the data of a config.")
@user_errors
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
    from mtrain.data.prepare import prepare as prepare_data
    from mtrain.run.directory import RunLock

    config = _config(config, set_)
    if dry_run:
        return _show_dry_run(config)
    given_spm = _load_init_source(config).state["spm"] if config.train.init_from else None
    with RunLock(Path(config.out_dir)):  # not under a training run's feet
        data = prepare_data(config, given_spm=given_spm)
    for split, counts in data.manifest["splits"].items():
        typer.echo(
            f"{split}: {counts['pairs']} pairs, {counts['src_tokens']} source and {counts['tgt_tokens']} target tokens"
        )


@app.command(short_help="Train a model; running it again resumes.")
@user_errors
def train(
    config: Path = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    resume: Optional[Path] = typer.Option(
        None, metavar="FILE", help="Continue from this checkpoint instead of {out_dir}/checkpoint_last.pt."
    ),
    restart: bool = typer.Option(
        False,
        "--restart",
        help="Delete the run's checkpoints, metrics and TensorBoard logs and start over (other files stay).",
    ),
    recover: bool = typer.Option(
        False,
        "--recover",
        help="When checkpoint_last.pt is damaged, continue from the newest readable checkpoint_<step>.pt.",
    ),
    allow_config_change: bool = typer.Option(
        False,
        "--allow-config-change",
        help="Resume although training settings differ from the checkpoint's (recorded in metrics.jsonl).",
    ),
    device: Optional[str] = typer.Option(
        None, metavar="auto|cpu|cuda", help="Where to train (default: train.device of the config)."
    ),
    threads: Optional[int] = typer.Option(
        None, help="CPU threads per process (default: train.threads; 0: the CPUs this process may use)."
    ),
    nproc_per_node: int = typer.Option(
        1,
        "--nproc-per-node",
        help="Start this many processes through torchrun (DDP: one per GPU, or CPU processes with gloo).",
    ),
) -> None:
    """Train a model (preparing the data first if needed); re-running resumes.

    Writes config.yaml, metrics.jsonl and checkpoints (checkpoint_last.pt, checkpoint_<step>.pt,
    checkpoint_best.pt, checkpoint_avg.pt) into out_dir. Ctrl-C or SIGTERM saves and exits;
    the same command then continues where it stopped.
    """
    from mtrain import launcher

    if nproc_per_node > 1 and not launcher.launched_by_torchrun():
        argv = _without_option(sys.argv[1:], "--nproc-per-node")
        raise typer.Exit(launcher.launch(nproc_per_node, argv))
    overrides = (
        list(set_ or [])
        + ([f"train.device={device}"] if device else [])
        + ([f"train.threads={threads}"] if threads is not None else [])
    )
    from mtrain.training.session import train as run_training

    resume = str(resume) if resume else None
    options = {"restart": restart, "recover": recover, "allow_config_change": allow_config_change}
    result = run_training(_config(config, overrides), resume=resume, load_init=_load_init_source, **options)
    if int(os.environ.get("RANK", "0")) == 0 and result["valid"]:
        typer.echo("final validation: " + " ".join(f"{k} {v:.3f}" for k, v in result["valid"].items()))


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


def _load_init_source(config: "Config") -> "InitSource":
    """train.init_from's model: an mtrain checkpoint, or a MarianMTModel directory imported on the fly."""
    if Path(config.train.init_from).is_dir():
        from mtrain.deploy.marian_import import marian_init_source

        return marian_init_source(config.train.init_from, config.data.src_lang, config.data.tgt_lang)
    from mtrain.training.initial import load_checkpoint_source

    return load_checkpoint_source(config)


def _without_option(argv: list[str], name: str) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


EngineOption = typer.Option(
    "torch",
    metavar="torch|ctranslate2",
    help="torch (mtrain's own search, the reference) or ctranslate2 (converted once and cached; needs mtrain[deploy]).",
)
ModelDirOption = typer.Option(
    None, "--model", metavar="DIR", help="An exported CTranslate2 directory (mtrain export) instead of --checkpoint."
)
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
AlignmentLayerOption = typer.Option(
    0,
    metavar="L",
    show_default=False,
    help="Decoder layer (from 1) whose cross-attention aligns (default: the last, best by alignment error rate).",
)
ThreadsOption = typer.Option(
    0,
    show_default=False,
    help="CPU threads for decoding (default: OMP_NUM_THREADS, else the CPUs this process may use).",
)
DeviceOption = typer.Option("auto", metavar="auto|cpu|cuda", help="Where to run the model.")
PrecisionOption = typer.Option(
    "auto", metavar="auto|fp32|bf16", help="torch engine: auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16."
)
BeamOption = typer.Option(None, help="Beam size; 1 is greedy (default: decode.beam of the checkpoint's config).")
LenpenOption = typer.Option(None, help="Length penalty alpha (default: decode.lenpen).")
MaxTokensOption = typer.Option(
    None, help="Source tokens times beam size per decoding batch (default: decode.max_tokens)."
)
QuantizationOption = typer.Option(
    None,
    metavar="TYPE",
    help="With --engine ctranslate2 and a checkpoint: the weights' type "
    "(int8, int8_float32, float32, ...; default int8).",
)


@app.command(short_help="Translate text, one output line per input line.")
@user_errors
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
) -> None:
    """Translate text with a checkpoint or an exported model: one output line per input line."""
    from mtrain.commands.translate import Aligner, open_engine, translate_command

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
    translate_command(translator, input, output, nbest, Aligner(translator, alignment_layer) if alignment else None)


@app.command(short_help="Distill a teacher into a small student, then export it.")
@user_errors
def distill(
    config: Path = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    teacher: list[Path] = typer.Option(
        ...,
        "--teacher",
        metavar="FILE",
        help="The teacher's checkpoint, e.g. runs/multi30k-en-de/checkpoint_avg.pt (repeat it for an ensemble).",
    ),
    beam: Optional[int] = typer.Option(None, help="The teacher's beam size (default: its tuned decode.beam)."),
    lenpen: Optional[float] = typer.Option(None, help="The teacher's length penalty (default: its decode.lenpen)."),
    engine: str = typer.Option(
        "auto",
        metavar="auto|torch|ctranslate2",
        help="auto: CTranslate2 for one teacher when mtrain[deploy] is installed, else mtrain's own search.",
    ),
    original_weight: float = typer.Option(
        0.0,
        metavar="W",
        show_default=False,
        help="Also train on the original pairs, each corpus weighted W against the distilled corpus's 1 "
        "(default: distilled data only).",
    ),
    export: bool = typer.Option(True, "--export/--no-export", help="Export the student to int8 CTranslate2."),
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
) -> None:
    """Sequence-level knowledge distillation (Kim and Rush, 2016): the teacher translates the training
    sources of the student's config into {out_dir}/distilled/, the student trains on them, and is
    exported to {out_dir}/ct2-int8. Running it again resumes whichever step was interrupted."""
    from mtrain.commands.distill import distill_command
    from mtrain.commands.export import export_command
    from mtrain.commands.translate import open_engine
    from mtrain.training.session import train as run_training

    student = _config(config, set_)
    overrides = {k: v for k, v in (("beam", beam), ("lenpen", lenpen)) if v is not None}

    def open_teacher(identity: dict):
        chosen = engine
        if engine == "auto":
            chosen = "ctranslate2" if len(teacher) == 1 and importlib.util.find_spec("ctranslate2") else "torch"
        return open_engine(teacher, None, chosen, device, precision, threads, **overrides)

    result = distill_command(
        student,
        teacher,
        open_teacher,
        run_training,
        (lambda ckpt, out: export_command(ckpt, "ctranslate2", out, "int8", force=True)) if export else None,
        original_weight,
    )
    typer.echo(f"student: {student.out_dir}" + (f"; exported to {result['exported']}" if "exported" in result else ""))


RuleOption = typer.Option(
    "robust",
    metavar="robust|argmax",
    help="robust: of the settings the paired bootstrap cannot tell from the best, the output length "
    "nearest the references', then the smallest length penalty; argmax: the highest BLEU.",
)
HoldoutFractionOption = typer.Option(
    0.0,
    metavar="F",
    show_default=False,
    help="Tune on the rest of the validation set and score the choice and the untuned default on this "
    "share of it, e.g. 0.5 (default: off).",
)


@app.command(short_help="Choose beam and length penalty on the validation set.")
@user_errors
def tune(
    checkpoint: list[Path] = typer.Option(
        ...,
        "--checkpoint",
        metavar="FILE",
        help="The checkpoint to tune, e.g. runs/demo/checkpoint_avg.pt (repeat it to tune an ensemble).",
    ),
    beam: Optional[str] = typer.Option(
        None, metavar="B1,B2,...", help="Beam sizes to try, e.g. 4,5,6 (default: the checkpoint's decode.beam)."
    ),
    lenpen: str = typer.Option(
        "0.4:2.0:0.2", metavar="START:STOP:STEP | A1,A2,...", help="Length penalties to try (STOP included)."
    ),
    src: Optional[Path] = typer.Option(
        None, metavar="FILE", help="Validation sources (default: the run's prepared data/valid.<src>.txt)."
    ),
    ref: Optional[Path] = typer.Option(
        None, metavar="FILE", help="Validation references (default: the run's prepared data/valid.<tgt>.txt)."
    ),
    write: bool = typer.Option(
        False, "--write", help="Store the chosen beam and length penalty in the checkpoint's decode settings."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="FILE", help="With --write: write a tuned copy here instead of in place."
    ),
    rule: str = RuleOption,
    holdout_fraction: float = HoldoutFractionOption,
    max_tokens: Optional[int] = MaxTokensOption,
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
) -> None:
    """Choose beam size and length penalty on the validation set: a table of BLEU, chrF, brevity
    penalty and time per setting, the choice of --rule; --write makes it the checkpoint's default."""
    from mtrain.commands.translate import open_engine
    from mtrain.commands.tune import tune_command

    tune_command(
        checkpoint,
        beam,
        lenpen,
        src,
        ref,
        write,
        output,
        lambda: open_engine(checkpoint, None, "torch", device, precision, threads, max_tokens=max_tokens),
        typer.echo,
        rule,
        holdout_fraction,
    )


PaperBleuOption = typer.Option(
    False, "--paper-bleu", help="Also report the paper's tokenized BLEU with compound splitting."
)
BaselineOption = typer.Option(
    None,
    "--baseline",
    metavar="FILE",
    help="Another system's translations of the same source: also test whether the two differ significantly "
    "(sacreBLEU's paired bootstrap, 1000 resamples).",
)


@app.command("eval-bleu", short_help="Score translations with sacreBLEU (BLEU and chrF).")
@user_errors
def eval_bleu(
    ref: list[Path] = typer.Option(
        ..., "--ref", "-r", metavar="FILE", help="Reference file (repeat for several references)."
    ),
    hyp: Optional[Path] = typer.Option(None, "--hyp", metavar="FILE", help="Translations to score."),
    checkpoint: Optional[list[Path]] = typer.Option(
        None,
        "--checkpoint",
        metavar="FILE",
        help="Translate --src with this checkpoint, then score (repeat it for an ensemble).",
    ),
    model: Optional[Path] = ModelDirOption,
    src: Optional[Path] = typer.Option(
        None, "--src", metavar="FILE", help="Source file to translate (with --checkpoint or --model)."
    ),
    beam: Optional[int] = BeamOption,
    lenpen: Optional[float] = LenpenOption,
    max_tokens: Optional[int] = MaxTokensOption,
    engine: str = EngineOption,
    quantization: Optional[str] = QuantizationOption,
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    paper_bleu: bool = PaperBleuOption,
    baseline: Optional[Path] = BaselineOption,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    tgt_lang: Optional[str] = typer.Option(
        None,
        "--tgt-lang",
        metavar="CODE",
        help="The references' language: zh, ja and ko get sacreBLEU's own tokenizer (default: the model's target).",
    ),
) -> None:
    """Score translations with sacreBLEU and chrF (detokenized, with signatures)."""
    from mtrain.commands.evaluate import eval_command

    options = dict(checkpoint=checkpoint, model_dir=model, engine=engine, device=device, precision=precision,
                   threads=threads, quantization=quantization, beam=beam, lenpen=lenpen,
                   max_tokens=max_tokens)  # fmt: skip
    translating = bool(checkpoint) or model is not None
    eval_command(ref, hyp=hyp, src=src, translator_options=options if translating else None, paper_bleu=paper_bleu,
                 as_json=json_output, baseline=baseline, tgt_lang=tgt_lang)  # fmt: skip


@app.command(short_help="Export a model for CTranslate2 or Hugging Face.")
@user_errors
def export(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", metavar="FILE", help="The checkpoint to export, e.g. runs/demo/checkpoint_avg.pt."
    ),
    format: str = typer.Option(
        ...,
        "--format",
        "-f",
        metavar="FORMAT",
        help="ctranslate2 (fast CPU/GPU inference, int8) or huggingface (a transformers MarianMTModel).",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", metavar="DIR", help="The directory to write (replaced only with --force)."
    ),
    quantization: Optional[str] = typer.Option(
        None, metavar="TYPE", help="ctranslate2: int8 (default), int8_float32, float32, int16, bfloat16, float16, ..."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty output directory."),
) -> None:
    """Export a checkpoint for deployment: a CTranslate2 model or a Hugging Face model directory.

    Needs the deploy extra: pip install 'mtrain[deploy]'. The directory also holds the
    sentencepiece models and mtrain.json (languages, decode settings), so it alone translates.
    """
    from mtrain.commands.export import export_command

    written = export_command(checkpoint, format, output, quantization, force)
    typer.echo(f"exported {checkpoint} as {format} to {written}")


@app.command("import", short_help="Import a Hugging Face Marian (OPUS-MT) model as a checkpoint.")
@user_errors
def import_model(
    directory: Path = typer.Argument(
        ..., metavar="DIR", help="A MarianMTModel directory: config.json, weights, vocab.json, source.spm, target.spm."
    ),
    format: str = typer.Option(
        "huggingface", "--format", "-f", metavar="FORMAT", help="What DIR holds: huggingface (a MarianMTModel)."
    ),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The checkpoint to write, e.g. model.pt."),
    src_lang: Optional[str] = typer.Option(
        None, metavar="CODE", help="Source language code (default: the tokenizer's source_lang)."
    ),
    tgt_lang: Optional[str] = typer.Option(
        None, metavar="CODE", help="Target language code (default: the tokenizer's target_lang)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
) -> None:
    """Import a Hugging Face MarianMTModel directory (an OPUS-MT model, or an mtrain export) as an
    mtrain checkpoint.

    translate, eval-bleu, tune, serve, export, ensembles and train.init_from take the result.
    Needs the deploy extra: pip install 'mtrain[deploy]'.
    """
    if format != "huggingface":
        raise MtrainError(f"--format {format}: mtrain imports huggingface (MarianMTModel) directories only")
    from mtrain.deploy.marian_import import import_huggingface

    state = import_huggingface(directory, output, src_lang, tgt_lang, force)
    data, model = state["config"]["data"], state["config"]["model"]
    typer.echo(
        f"imported {directory} ({data['src_lang']}->{data['tgt_lang']}, d_model {model['d_model']}, "
        f"{model['encoder_layers']}+{model['decoder_layers']} layers, {model['activation']}) to {output}"
    )


@app.command(short_help="Serve translations over HTTP, with a page to try them.")
@user_errors
def serve(
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", metavar="FILE", help="A checkpoint, e.g. runs/demo/checkpoint_avg.pt."
    ),
    model: Optional[Path] = ModelDirOption,
    engine: str = EngineOption,
    quantization: Optional[str] = QuantizationOption,
    host: str = typer.Option(
        "127.0.0.1",
        metavar="ADDRESS",
        help="Address to listen on; 127.0.0.1 keeps it on this machine (0.0.0.0: every interface).",
    ),
    port: int = typer.Option(8000, help="TCP port."),
    threads: int = ThreadsOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    max_sentences: int = typer.Option(ServeLimits.max_sentences, help="Most sentences in one request."),
    max_chars: int = typer.Option(ServeLimits.max_chars, help="Most characters in one sentence."),
    max_body_bytes: int = typer.Option(ServeLimits.max_body_bytes, help="Largest request body in bytes."),
    max_queue: int = typer.Option(
        ServeLimits.max_queue, help="Most sentences waiting for the model; beyond, requests get 503 + Retry-After."
    ),
    max_wait_ms: float = typer.Option(
        ServeLimits.max_wait_ms, help="How long a request may wait for others to share its batch."
    ),
    max_work: int = typer.Option(
        ServeLimits.max_work, help="Most decoding one request may ask for: its source characters x beam (else 413)."
    ),
    max_connections: int = typer.Option(
        ServeLimits.max_connections, help="Most open connections; beyond, new requests get 503."
    ),
    drain_seconds: float = typer.Option(
        ServeLimits.drain_seconds,
        help="After SIGTERM or Ctrl-C, how long the requests in flight may take before the server exits.",
    ),
    idle_seconds: float = typer.Option(
        ServeLimits.idle_seconds,
        help="Close a connection whose client sends nothing for this long while the server waits for its request.",
    ),
    receive_seconds: float = typer.Option(
        ServeLimits.receive_seconds,
        help="Close a connection whose request (line, headers, body) has not arrived whole this long after it began.",
    ),
) -> None:
    """Serve translations over HTTP: a page to try the model at /, POST /translate, POST /attention,
    GET /health, /info, /openapi.json.

    Needs the serve extra: pip install 'mtrain[serve]'. Example:
    curl -s localhost:8000/translate -H 'content-type: application/json' -d '{"text": ["A dog runs."]}'
    """
    from mtrain.commands.translate import check_model_source, open_engine
    from mtrain.deploy.serve.app import serve_command

    check_model_source(checkpoint, model)  # before the server starts
    limits = ServeLimits(max_sentences, max_chars, max_body_bytes, max_queue, max_wait_ms, max_work=max_work,
        max_connections=max_connections, drain_seconds=drain_seconds, idle_seconds=idle_seconds,
        receive_seconds=receive_seconds)  # fmt: skip
    engine_args = dict(checkpoint=checkpoint, model_dir=model, engine=engine, device=device, precision=precision)
    serve_command(lambda: open_engine(**engine_args, threads=threads, quantization=quantization), host, port, limits)


@app.command(short_help="Average the weights of checkpoints.")
@user_errors
def average(
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="RUN_DIR | CHECKPOINT...",
        help="A run directory (its last N numbered checkpoints) or checkpoint files.",
    ),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The averaged checkpoint to write."),
    last: int = typer.Option(5, help="With a run directory: how many of its last checkpoints to average (>= 1)."),
    best: int = typer.Option(
        0,
        metavar="N",
        show_default=False,
        help="With a run directory: average the N checkpoints with the best validation score "
        "(by the run's train.best_metric) instead of the last ones (default: off).",
    ),
    allow_gaps: bool = typer.Option(
        False,
        "--allow-gaps",
        help="With a run directory: average even when scheduled checkpoints are missing among the last N.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace --output even when it is a training checkpoint (its optimizer state is lost)."
    ),
) -> None:
    """Average the weights of checkpoints (the paper: last 5 for base, 20 for big)."""
    from mtrain.commands.average import average_command

    paths = average_command(inputs, output, last, allow_gaps, best, force)
    typer.echo(f"averaged {len(paths)} checkpoint(s) into {output}: {', '.join(p.name for p in paths)}")


@app.command(short_help="Draw the attention behind one translation.")
@user_errors
def attention(
    checkpoint: Path = typer.Option(
        ..., "--checkpoint", metavar="FILE", help="A checkpoint, e.g. runs/demo/checkpoint_avg.pt."
    ),
    text: str = typer.Option(..., "--text", "-t", help='The sentence to translate, e.g. "A man rides a bike."'),
    output: Path = typer.Option(
        ..., "--output", "-o", metavar="FILE", help="The PNG to write (or JSON with --format json)."
    ),
    kind: str = typer.Option(
        "cross",
        metavar="cross|encoder|decoder",
        help="Which attention: cross (decoder to source), encoder or decoder self-attention.",
    ),
    layer: Optional[int] = typer.Option(None, metavar="L", help="Only this layer (from 1): its heads and their mean."),
    head: Optional[int] = typer.Option(
        None, metavar="H", help="Only this head (from 1) of --layer (default: the last layer)."
    ),
    beam: Optional[int] = typer.Option(
        None, help="Beam size for the translation (default: decode.beam of the checkpoint)."
    ),
    format: str = typer.Option(
        "png",
        "--format",
        metavar="png|json",
        help="png (heatmaps, needs mtrain[plot]) or json (the raw weights, for notebooks).",
    ),
    device: str = DeviceOption,
) -> None:
    """Translate one sentence and draw the attention that produced it, labelled with subword pieces.

    By default: the cross-attention of every layer averaged over heads, and every head of the
    last layer. Example:
    mtrain attention --checkpoint runs/demo/checkpoint_avg.pt --text "The dog sees a cat." -o attn.png
    """
    from mtrain.files import atomic_write_text
    from mtrain.inference.translator import open_translator
    from mtrain.insight.attention import KINDS, attention_maps

    if format not in ("png", "json"):
        raise MtrainError(f"--format must be png or json, got '{format}'")
    if kind not in KINDS:
        raise MtrainError(f"--kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if format == "png":
        from mtrain.insight import plots

        plots.pyplot()  # a missing extra fails before the model loads
    maps = attention_maps(open_translator(checkpoint, device), text, beam)
    if format == "json":
        import json

        atomic_write_text(output, json.dumps(maps.to_json(kind)) + "\n")
    else:
        plots.save_png(plots.attention_figure(maps, kind, layer, head), output)
    typer.echo(f"{maps.translation}\nwrote {output}")


plot_app = typer.Typer(
    cls=ReadableGroup,
    help="Draw learning curves or the positional encodings (needs mtrain[plot]).",
    no_args_is_help=True,
)
app.add_typer(plot_app, name="plot", short_help="Draw learning curves or positional encodings.")


@plot_app.command("metrics", short_help="Draw the learning curves of runs.")
@user_errors
def plot_metrics(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="One or more run directories (overlaid)."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The PNG to write (1500 x 900 px)."),
) -> None:
    """Learning curves: train/valid loss, valid BLEU, lr, tokens/s against step, valid loss against time."""
    from mtrain.insight import plots

    plots.save_png(plots.metrics_figure(run_dirs), output)
    typer.echo(f"wrote {output}")


@plot_app.command("positions", short_help="Draw the sinusoidal positional encodings.")
@user_errors
def plot_positions(
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The PNG to write (1400 x 600 px)."),
    d_model: int = typer.Option(512, "--d-model", help="Model width."),
    length: int = typer.Option(100, help="Positions to draw."),
) -> None:
    """The sinusoidal positional encodings of section 3.5: the matrix and a few dimensions."""
    from mtrain.insight import plots

    plots.save_png(plots.positions_figure(d_model, length), output)
    typer.echo(f"wrote {output}")


@app.command(short_help="Write one HTML page about a run.")
@user_errors
def report(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A run directory written by mtrain train."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", help="The HTML page to write (self-contained)."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", metavar="FILE", help="Decode with this checkpoint (default: avg, else best, else last)."
    ),
    examples: int = typer.Option(3, help="Example translations with their attention maps."),
    max_sentences: int = typer.Option(1000, help="Test sentences to decode for the scores and speed."),
    device: str = DeviceOption,
) -> None:
    """One HTML page about a run: config, data, curves, scores with signatures, speed, examples (needs mtrain[plot])."""
    from mtrain.insight.report import report_command

    if examples < 0 or max_sentences < 1:
        raise MtrainError("--examples must be >= 0 and --max-sentences >= 1")
    used = report_command(run_dir, output, checkpoint, examples, max_sentences, device)
    typer.echo(f"wrote {output} (decoded with {used})")


def main() -> None:
    app()

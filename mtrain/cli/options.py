"""Options several commands share, defined once so that their help reads the same everywhere."""

from __future__ import annotations

import typer

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


EngineOption = typer.Option(
    "torch",
    metavar="torch|ctranslate2",
    help="torch (mtrain's own search, the reference) or ctranslate2 (converted once and cached; needs mtrain[deploy]).",
)
ModelDirOption = typer.Option(
    None, "--model", metavar="DIR", help="An exported CTranslate2 directory (mtrain export) instead of --checkpoint."
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
TgtLangOption = typer.Option(
    None,
    "--tgt-lang",
    metavar="LANG",
    help="Multilingual models: the language to translate into (fr, fra, ...); a bilingual model takes its own only.",
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

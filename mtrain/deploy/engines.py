"""Open the engine a command asks for: the checkpoint (or several, an ensemble) on mtrain's own
search, the checkpoint converted once for CTranslate2, or a directory `mtrain export` wrote.

Two engines share one interface (`translate_nbest(lines, beam, nbest, progress)`):
- `torch`, the reference: mtrain's own batched beam search on the checkpoint (inference/);
- `ctranslate2`: the checkpoint converted once to CTranslate2 (cached, rebuilt when the
  checkpoint file changes) or a directory made by `mtrain export --format ctranslate2`.
"""

from __future__ import annotations

from pathlib import Path

from mtrain.device import check_threads, default_threads, set_threads
from mtrain.errors import MtrainError
from mtrain.inference.engine import TranslationEngine
from mtrain.inference.translator import open_translator, target_language

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
    engine), or an exported CTranslate2 directory. `overrides` (beam, lenpen, max_tokens, tgt_lang, ...)
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
    else:
        set_threads(threads)
        translator = open_translator(paths, device, precision, **overrides)
    target_language(translator)  # a target language the model does not have: refused before any work
    return translator

"""The CTranslate2 export: an mtrain checkpoint as a CTranslate2 `TransformerSpec`, converted (and
quantized) by CTranslate2's own converter; and the cache of such conversions that
`translate --engine ctranslate2` uses for a checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mtrain.config import ModelConfig
from mtrain.deploy.export import ExportedCheckpoint, staged_directory
from mtrain.errors import MtrainError
from mtrain.extras import require
from mtrain.model.transformer import sinusoidal_positions

CT2_QUANTIZATIONS = ("float32", "int8", "int8_float32", "int16", "float16", "bfloat16", "int8_float16", "int8_bfloat16")
# int8: faster than float32 on CPUs at about the same BLEU (docs/benchmarks.md, decoding)
DEFAULT_QUANTIZATION = "int8"


EXPORT_LAYOUT = 2  # 2: return_attention gives the alignment translate --alignment reads (a cache rebuilds)


def ctranslate2_spec(ck: ExportedCheckpoint) -> Any:
    """mtrain's Transformer as a CTranslate2 `TransformerSpec`: post- or pre-norm, the FFN's
    activation, scaled embeddings, mtrain's own sinusoidal table, sources ending in </s>, decoding
    from <s>."""
    require("ctranslate2", "deploy")
    from ctranslate2.specs import common_spec, transformer_spec

    m, w = ck.model, {k: v.numpy() for k, v in ck.weights.items()}
    activation = getattr(common_spec.Activation, m.activation.upper())  # RELU, GELU, SWISH
    guided = ck.description.get("alignment_head")  # return_attention gives what translate --alignment reads:
    if guided:  # the guided head, moved to the front (CTranslate2 averages the first alignment_heads heads)
        w = _guided_head_first(w, m, guided["layer"], guided["head"])
    spec = transformer_spec.TransformerSpec.from_config(
        (m.encoder_layers, m.decoder_layers),
        m.heads,
        pre_norm=m.pre_norm,
        activation=activation,
        alignment_layer=guided["layer"] - 1 if guided else -1,
        alignment_heads=1 if guided else m.heads,  # else the last layer's mean of heads
    )
    positions = sinusoidal_positions(m.max_positions, m.d_model, m.positions).numpy()
    _ct2_stack(spec.encoder, w, "encoder", m, positions)
    _ct2_stack(spec.decoder, w, "decoder", m, positions)
    spec.encoder.embeddings[0].weight = w["src_embed.weight"]
    spec.decoder.embeddings.weight = w["tgt_embed.weight"]
    spec.decoder.projection.weight = w["output.weight"]
    if m.output_bias:
        spec.decoder.projection.bias = w["output.bias"]
    spec.register_source_vocabulary(ck.src_pieces)
    spec.register_target_vocabulary(ck.tgt_pieces)
    spec.config.add_source_eos = True  # mtrain's sources are pieces + </s>
    spec.config.decoder_start_token = "<s>"
    spec.config.layer_norm_epsilon = 1e-5  # torch.nn.LayerNorm's default
    return spec


def _guided_head_first(w: dict, m: ModelConfig, layer: int, head: int) -> dict:
    """The weights with heads 0 and `head` of decoder `layer`'s cross-attention swapped: the same
    function (heads are independent until W^O, whose columns swap with them)."""
    if head == 0:
        return w
    d, k, cross = m.d_model, m.d_model // m.heads, f"decoder.{layer - 1}.cross_attn"
    order = np.arange(d)
    order[:k], order[head * k : (head + 1) * k] = order[head * k : (head + 1) * k].copy(), order[:k].copy()
    rows = np.concatenate([order, d + order, 2 * d + order])  # query, key and value projections
    swapped = dict(w)
    swapped[f"{cross}.in_proj.weight"] = w[f"{cross}.in_proj.weight"][rows]
    swapped[f"{cross}.in_proj.bias"] = w[f"{cross}.in_proj.bias"][rows]
    swapped[f"{cross}.out_proj.weight"] = w[f"{cross}.out_proj.weight"][:, order]
    return swapped


def _ct2_stack(stack: Any, w: dict, prefix: str, m: ModelConfig, positions: np.ndarray) -> None:
    """One encoder or decoder stack: position table, layers, and pre-norm's final layer norm."""
    stack.scale_embeddings = True  # embeddings * sqrt(d_model), section 3.4
    stack.position_encodings.encodings = positions
    if m.pre_norm:
        _ct2_norm(stack.layer_norm, w, f"{prefix}_norm")
    for i, layer in enumerate(stack.layer):
        p = f"{prefix}.{i}"
        _ct2_linear(layer.self_attention.linear[0], w, f"{p}.self_attn.in_proj")
        _ct2_linear(layer.self_attention.linear[1], w, f"{p}.self_attn.out_proj")
        _ct2_norm(layer.self_attention.layer_norm, w, f"{p}.sub1.norm")
        if prefix == "decoder":
            d = m.d_model
            cross = f"{p}.cross_attn"
            layer.attention.linear[0].weight = w[f"{cross}.in_proj.weight"][:d]
            layer.attention.linear[0].bias = w[f"{cross}.in_proj.bias"][:d]
            layer.attention.linear[1].weight = w[f"{cross}.in_proj.weight"][d:]
            layer.attention.linear[1].bias = w[f"{cross}.in_proj.bias"][d:]
            _ct2_linear(layer.attention.linear[2], w, f"{cross}.out_proj")
            _ct2_norm(layer.attention.layer_norm, w, f"{p}.sub2.norm")
        _ct2_linear(layer.ffn.linear_0, w, f"{p}.ffn.0")
        _ct2_linear(layer.ffn.linear_1, w, f"{p}.ffn.2")
        _ct2_norm(layer.ffn.layer_norm, w, f"{p}.sub{3 if prefix == 'decoder' else 2}.norm")


def _ct2_linear(spec: Any, w: dict, name: str) -> None:
    spec.weight, spec.bias = w[f"{name}.weight"], w[f"{name}.bias"]


def _ct2_norm(spec: Any, w: dict, name: str) -> None:
    spec.gamma, spec.beta = w[f"{name}.weight"], w[f"{name}.bias"]


def check_quantization(quantization: str) -> None:
    """Refuse a quantization this machine's CPU cannot run, before converting anything."""
    ct2 = require("ctranslate2", "deploy")
    if quantization not in CT2_QUANTIZATIONS:
        raise MtrainError(f"--quantization '{quantization}' is not one of {', '.join(CT2_QUANTIZATIONS)}")
    supported = ct2.get_supported_compute_types("cpu")
    if quantization not in supported:
        raise MtrainError(
            f"--quantization {quantization} is not supported on this CPU (supported: {', '.join(sorted(supported))}); "
            "pick one of those"
        )


def export_ctranslate2(
    ck: ExportedCheckpoint, output: Path, quantization: str = DEFAULT_QUANTIZATION, force: bool = False
) -> Path:
    """Write a CTranslate2 model directory (weights quantized as asked) plus the sidecar files."""
    ct2 = require("ctranslate2", "deploy")
    check_quantization(quantization)
    spec = ctranslate2_spec(ck)

    class SpecConverter(ct2.converters.Converter):
        """CTranslate2's converter machinery (validation, quantization, file layout) over our spec."""

        def _load(self):
            return spec

    with staged_directory(output, force) as tmp:
        SpecConverter().convert(str(tmp), quantization=quantization, force=True)
        ck.write_sidecar(tmp, "ctranslate2")
    return Path(output)


def cached_ctranslate2(checkpoint_path: Path, quantization: str) -> Path:
    """A CTranslate2 conversion of a checkpoint, made once and reused until the file changes.

    The cache key is the checkpoint's resolved path, size and modification time, the
    quantization and the export's layout version; it lives under $MTRAIN_CACHE (default ~/.cache/mtrain)."""
    path = Path(checkpoint_path).resolve()
    if not path.is_file():
        raise MtrainError(f"checkpoint not found: {checkpoint_path}")
    stat = path.stat()
    fields = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{quantization}|{EXPORT_LAYOUT}"
    key = hashlib.sha256(fields.encode()).hexdigest()[:20]
    root = Path(os.environ.get("MTRAIN_CACHE", Path.home() / ".cache" / "mtrain"))
    target = root / "ctranslate2" / f"{path.stem}-{quantization}-{key}"
    if not _cache_entry_whole(target):
        export_ctranslate2(ExportedCheckpoint(path), target, quantization, force=True)
        (target / CACHE_RECORD).write_text(json.dumps({"model.bin": (target / "model.bin").stat().st_size}))
    return target


CACHE_RECORD = "cache.json"  # the size model.bin had when the cache entry was made


def _cache_entry_whole(target: Path) -> bool:
    """A cache entry whose model.bin is the size it was written with (one truncated by a full disk
    or a crash elsewhere is converted again, not failed on forever)."""
    try:
        recorded = json.loads((target / CACHE_RECORD).read_text())["model.bin"]
        return (target / "model.bin").stat().st_size == recorded
    except (OSError, ValueError, KeyError, TypeError):
        return False

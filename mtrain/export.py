"""`mtrain export`: a checkpoint becomes a CTranslate2 model or a Hugging Face Marian model.

Both targets are built through their own libraries' APIs, never by writing a binary format by
hand: CTranslate2 through its model specification (`TransformerSpec`) and converter, which
also quantizes; Hugging Face through `MarianConfig` / `MarianMTModel.save_pretrained` and
`MarianTokenizer`. The same weights, the same arithmetic: the tests check that each exported
model gives mtrain's greedy translations (and, for Hugging Face, mtrain's logits).

Every output directory is written under a temporary name next to its destination and renamed
at the end, so an interrupted export leaves no half-written model behind.

Layout of an exported directory, besides the engine's own files:
`source.spm` / `target.spm` (the sentencepiece models) and `mtrain.json` (languages, model
shape, training step and the checkpoint's decode settings), so the directory alone translates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from mtrain import checkpoint
from mtrain.config import ModelConfig
from mtrain.errors import MtrainError
from mtrain.model import sinusoidal_positions
from mtrain.special import BOS, EOS, PAD, UNK

FORMATS = ("ctranslate2", "huggingface")
DEPLOY_EXTRA = "pip install 'mtrain[deploy]'"


def require(module: str):
    """Import an optional dependency of the `deploy` extra, or say in one line how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MtrainError(f"this needs the '{module}' package: {DEPLOY_EXTRA}") from None


# ----------------------------------------------------------------------------- shared pieces


class ExportedCheckpoint:
    """What every exporter reads from a checkpoint: weights, model shape, vocabularies, settings."""

    def __init__(self, path: Path):
        state = checkpoint.load(path)
        self.weights: dict[str, torch.Tensor] = {k: v.float() for k, v in state["model"].items()}
        self.config: dict = state["config"]
        config = checkpoint.config_of(state, path)
        self.model, self.decode = config.model, config.decode
        self.src_spm: bytes = state["spm"]["src"]
        self.tgt_spm: bytes = state["spm"]["tgt"] if state["spm"]["tgt"] is not None else state["spm"]["src"]
        self.joint = state["spm"]["tgt"] is None
        self.description = checkpoint.describe(state, path, "")
        tokenizer = checkpoint.tokenizer_of(state, path)
        # the vocabularies as sentencepiece pieces, in id order (what CTranslate2 and Marian index)
        self.src_pieces = [tokenizer.src.id_to_piece(i) for i in range(tokenizer.src_vocab_size)]
        self.tgt_pieces = [tokenizer.tgt.id_to_piece(i) for i in range(tokenizer.tgt_vocab_size)]

    def write_sidecar(self, out: Path, engine: str) -> None:
        """The sentencepiece models and mtrain.json next to the engine's files."""
        (out / "source.spm").write_bytes(self.src_spm)
        (out / "target.spm").write_bytes(self.tgt_spm)
        (out / "mtrain.json").write_text(
            json.dumps({**self.description, "engine": engine}, indent=2) + "\n", encoding="utf-8"
        )


@contextlib.contextmanager
def staged_directory(output: Path, force: bool):
    """A temporary directory beside `output` that replaces it when the block succeeds; when the
    block fails, nothing is left behind and `output` is untouched."""
    tmp = _staging_dir(output, force)
    try:
        yield tmp
        _publish(tmp, Path(output))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _staging_dir(output: Path, force: bool) -> Path:
    """A fresh temporary directory beside `output`; refuses a non-empty `output` without --force."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise MtrainError(f"--output {output} exists and is not a directory; choose another path")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise MtrainError(
            f"--output {output} exists and is not empty; add --force to replace it, or choose another directory"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _publish(tmp: Path, output: Path) -> None:
    """Swap the finished temporary directory into place."""
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, output)


# ----------------------------------------------------------------------------- CTranslate2

# int8 decoded Multi30K beam 4 1.6x faster than float32 on the development CPU, BLEU within 0.2 (README)
DEFAULT_QUANTIZATION = "int8"
CT2_QUANTIZATIONS = ("float32", "int8", "int8_float32", "int16", "float16", "bfloat16", "int8_float16", "int8_bfloat16")


def ctranslate2_spec(ck: ExportedCheckpoint):
    """mtrain's Transformer as a CTranslate2 `TransformerSpec`: post- or pre-norm, ReLU FFN,
    scaled embeddings, mtrain's own sinusoidal table, sources ending in </s>, decoding from <s>."""
    require("ctranslate2")
    from ctranslate2.specs import common_spec, transformer_spec

    m, w = ck.model, {k: v.numpy() for k, v in ck.weights.items()}
    spec = transformer_spec.TransformerSpec.from_config(
        (m.encoder_layers, m.decoder_layers), m.heads, pre_norm=m.pre_norm, activation=common_spec.Activation.RELU
    )
    positions = sinusoidal_positions(m.max_positions, m.d_model).numpy()
    _ct2_stack(spec.encoder, w, "encoder", m, positions)
    _ct2_stack(spec.decoder, w, "decoder", m, positions)
    spec.encoder.embeddings[0].weight = w["src_embed.weight"]
    spec.decoder.embeddings.weight = w["tgt_embed.weight"]
    spec.decoder.projection.weight = w["output.weight"]
    spec.register_source_vocabulary(ck.src_pieces)
    spec.register_target_vocabulary(ck.tgt_pieces)
    spec.config.add_source_eos = True  # mtrain's sources are pieces + </s>
    spec.config.decoder_start_token = "<s>"
    spec.config.layer_norm_epsilon = 1e-5  # torch.nn.LayerNorm's default
    return spec


def _ct2_stack(stack, w: dict, prefix: str, m: ModelConfig, positions) -> None:
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


def _ct2_linear(spec, w: dict, name: str) -> None:
    spec.weight, spec.bias = w[f"{name}.weight"], w[f"{name}.bias"]


def _ct2_norm(spec, w: dict, name: str) -> None:
    spec.gamma, spec.beta = w[f"{name}.weight"], w[f"{name}.bias"]


def check_quantization(quantization: str) -> None:
    """Refuse a quantization this machine's CPU cannot run, before converting anything."""
    ct2 = require("ctranslate2")
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
    ct2 = require("ctranslate2")
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

    The cache key is the checkpoint's resolved path, size and modification time, and the
    quantization; it lives under $MTRAIN_CACHE (default ~/.cache/mtrain)."""
    path = Path(checkpoint_path).resolve()
    if not path.is_file():
        raise MtrainError(f"checkpoint not found: {checkpoint_path}")
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{quantization}".encode()).hexdigest()[:20]
    root = Path(os.environ.get("MTRAIN_CACHE", Path.home() / ".cache" / "mtrain"))
    target = root / "ctranslate2" / f"{path.stem}-{quantization}-{key}"
    if not (target / "model.bin").is_file():
        export_ctranslate2(ExportedCheckpoint(path), target, quantization, force=True)
    return target


# ----------------------------------------------------------------------------- Hugging Face (Marian)


def marian_permutation(d_model: int) -> torch.Tensor:
    """mtrain's position table interleaves sin and cos (dimension 2i: sin, 2i+1: cos); Marian's
    puts every sin first, then every cos. Reading mtrain's residual-stream dimensions in the order
    [0, 2, 4, ..., 1, 3, 5, ...] turns one table into the other; applied to every weight that
    reads or writes the residual stream it changes no output (layer norm, attention and the
    feed-forward networks are all equivariant to a fixed permutation of their input features)."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def marian_state_dict(ck: ExportedCheckpoint) -> dict[str, torch.Tensor]:
    """mtrain's weights under MarianMTModel's names, with the residual stream permuted."""
    w, m = ck.weights, ck.model
    perm = marian_permutation(m.d_model)
    out = {
        "model.encoder.embed_tokens.weight": w["src_embed.weight"][:, perm],
        "model.decoder.embed_tokens.weight": w["tgt_embed.weight"][:, perm],
        "lm_head.weight": w["output.weight"][:, perm],
        "final_logits_bias": torch.zeros(1, w["output.weight"].size(0)),
    }
    if m.tie_embeddings == "all":
        out["model.shared.weight"] = out["model.encoder.embed_tokens.weight"]
    for stack, count in (("encoder", m.encoder_layers), ("decoder", m.decoder_layers)):
        for i in range(count):
            out.update(_marian_layer(w, perm, stack, i, m.d_model))
    return out


def _marian_layer(w: dict, perm: torch.Tensor, stack: str, i: int, d: int) -> dict[str, torch.Tensor]:
    ours, hf, out = f"{stack}.{i}", f"model.{stack}.layers.{i}", {}

    def reads(name, hf_name):  # a linear map from the residual stream: permute its input features
        out[f"{hf_name}.weight"], out[f"{hf_name}.bias"] = w[f"{name}.weight"][:, perm], w[f"{name}.bias"]

    def writes(name, hf_name):  # a linear map into the residual stream: permute its outputs
        out[f"{hf_name}.weight"], out[f"{hf_name}.bias"] = w[f"{name}.weight"][perm], w[f"{name}.bias"][perm]

    def norm(name, hf_name):
        out[f"{hf_name}.weight"], out[f"{hf_name}.bias"] = w[f"{name}.weight"][perm], w[f"{name}.bias"][perm]

    def attention(name, hf_name):
        weight, bias = w[f"{name}.in_proj.weight"], w[f"{name}.in_proj.bias"]
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{hf_name}.{proj}.weight"] = weight[j * d : (j + 1) * d][:, perm]
            out[f"{hf_name}.{proj}.bias"] = bias[j * d : (j + 1) * d]
        writes(f"{name}.out_proj", f"{hf_name}.out_proj")

    attention(f"{ours}.self_attn", f"{hf}.self_attn")
    norm(f"{ours}.sub1.norm", f"{hf}.self_attn_layer_norm")
    if stack == "decoder":
        attention(f"{ours}.cross_attn", f"{hf}.encoder_attn")
        norm(f"{ours}.sub2.norm", f"{hf}.encoder_attn_layer_norm")
    reads(f"{ours}.ffn.0", f"{hf}.fc1")
    writes(f"{ours}.ffn.2", f"{hf}.fc2")
    norm(f"{ours}.sub{3 if stack == 'decoder' else 2}.norm", f"{hf}.final_layer_norm")
    return out


def marian_config(ck: ExportedCheckpoint):
    """MarianConfig of the same shape: ReLU FFN, post-norm, scaled embeddings, <s> starts decoding."""
    transformers = require("transformers")
    m = ck.model
    return transformers.MarianConfig(
        vocab_size=len(ck.src_pieces),
        decoder_vocab_size=len(ck.tgt_pieces),
        d_model=m.d_model,
        encoder_layers=m.encoder_layers,
        decoder_layers=m.decoder_layers,
        encoder_attention_heads=m.heads,
        decoder_attention_heads=m.heads,
        encoder_ffn_dim=m.d_ff,
        decoder_ffn_dim=m.d_ff,
        activation_function="relu",
        max_position_embeddings=m.max_positions,
        scale_embedding=True,
        dropout=m.dropout,
        attention_dropout=m.attention_dropout,
        activation_dropout=m.activation_dropout,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=BOS,
        decoder_start_token_id=BOS,
        forced_eos_token_id=None,
        share_encoder_decoder_embeddings=m.tie_embeddings == "all",
        tie_word_embeddings=m.tie_embeddings != "none",
    )


def marian_generation_config(ck: ExportedCheckpoint):
    """mtrain's decode settings as a GenerationConfig; pad and <s> are never generated, as in mtrain."""
    transformers = require("transformers")
    dec = ck.decode
    return transformers.GenerationConfig(
        num_beams=dec.beam,
        length_penalty=dec.lenpen,
        early_stopping=True,
        max_length=ck.model.max_positions,
        decoder_start_token_id=BOS,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        bad_words_ids=[[PAD], [BOS]],
    )


def export_huggingface(ck: ExportedCheckpoint, output: Path, force: bool = False) -> Path:
    """Write a transformers MarianMTModel directory (safetensors) and its MarianTokenizer."""
    transformers = require("transformers")
    if ck.model.pre_norm:
        raise MtrainError(
            "the Hugging Face export writes a MarianMTModel, which is post-norm only, and this model is "
            "pre-norm (model.pre_norm: true); export it with --format ctranslate2 instead"
        )
    model = transformers.MarianMTModel(marian_config(ck)).eval()
    missing, unexpected = model.load_state_dict(marian_state_dict(ck), strict=False)
    missing = [k for k in missing if "embed_positions" not in k and k != "model.shared.weight"]
    if missing or unexpected:
        raise AssertionError(f"Marian weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    model.generation_config = marian_generation_config(ck)
    with staged_directory(output, force) as tmp:
        model.save_pretrained(tmp)
        _save_marian_tokenizer(ck, tmp)
        ck.write_sidecar(tmp, "huggingface")
    return Path(output)


def _save_marian_tokenizer(ck: ExportedCheckpoint, output: Path) -> None:
    """A MarianTokenizer over the same sentencepiece models (it appends </s> to sources, as mtrain does)."""
    transformers = require("transformers")
    with tempfile.TemporaryDirectory() as scratch:
        files = Path(scratch)
        (files / "source.spm").write_bytes(ck.src_spm)
        (files / "target.spm").write_bytes(ck.tgt_spm)
        (files / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(ck.src_pieces)}), encoding="utf-8")
        separate = {}
        if not ck.joint:
            (files / "target_vocab.json").write_text(
                json.dumps({p: i for i, p in enumerate(ck.tgt_pieces)}), encoding="utf-8"
            )
            separate = {"target_vocab_file": str(files / "target_vocab.json"), "separate_vocabs": True}
        tokenizer = transformers.MarianTokenizer(
            source_spm=str(files / "source.spm"),
            target_spm=str(files / "target.spm"),
            vocab=str(files / "vocab.json"),
            source_lang=ck.config["data"]["src_lang"],
            target_lang=ck.config["data"]["tgt_lang"],
            unk_token=ck.tgt_pieces[UNK],
            eos_token="</s>",
            pad_token=ck.tgt_pieces[PAD],
            model_max_length=ck.model.max_positions,
            **separate,
        )
        tokenizer.save_pretrained(str(output))


# ----------------------------------------------------------------------------- the command


def export_command(
    checkpoint_path: Path, fmt: str, output: Path, quantization: str | None = None, force: bool = False
) -> Path:
    """`mtrain export`: check the request, then write the directory."""
    quantization = quantization or DEFAULT_QUANTIZATION
    if fmt not in FORMATS:
        raise MtrainError(f"--format '{fmt}' is not one of {', '.join(FORMATS)}")
    if fmt == "ctranslate2":
        check_quantization(quantization)
    ck = ExportedCheckpoint(checkpoint_path)
    if fmt == "ctranslate2":
        return export_ctranslate2(ck, output, quantization, force)
    return export_huggingface(ck, output, force)

"""The Hugging Face export: an mtrain checkpoint as a `MarianMTModel` directory (weights, config,
generation config and `MarianTokenizer` files), written through transformers' own classes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from mtrain.deploy.export import ExportedCheckpoint, staged_directory
from mtrain.errors import MtrainError
from mtrain.extras import require
from mtrain.special import BOS, EOS, PAD, UNK


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
        "final_logits_bias": w["output.bias"][None] if m.output_bias else torch.zeros(1, w["output.weight"].size(0)),
    }
    if m.tie_embeddings == "all":
        out["model.shared.weight"] = out["model.encoder.embed_tokens.weight"]
    for stack, count in (("encoder", m.encoder_layers), ("decoder", m.decoder_layers)):
        for i in range(count):
            out.update(_marian_layer(w, perm, stack, i, m.d_model))
    return out


def _marian_layer(w: dict, perm: torch.Tensor, stack: str, i: int, d: int) -> dict[str, torch.Tensor]:
    ours, hf, out = f"{stack}.{i}", f"model.{stack}.layers.{i}", {}

    def reads(name: str, hf_name: str) -> None:  # a linear map from the residual stream: permute its input features
        out[f"{hf_name}.weight"], out[f"{hf_name}.bias"] = w[f"{name}.weight"][:, perm], w[f"{name}.bias"]

    def writes(name: str, hf_name: str) -> None:  # a linear map into the residual stream: permute its outputs
        out[f"{hf_name}.weight"], out[f"{hf_name}.bias"] = w[f"{name}.weight"][perm], w[f"{name}.bias"][perm]

    def norm(name: str, hf_name: str) -> None:
        out[f"{hf_name}.weight"], out[f"{hf_name}.bias"] = w[f"{name}.weight"][perm], w[f"{name}.bias"][perm]

    def attention(name: str, hf_name: str) -> None:
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


def marian_config(ck: ExportedCheckpoint) -> Any:
    """MarianConfig of the same shape: the FFN's activation, post-norm, scaled embeddings, <s> starts decoding."""
    transformers = require("transformers", "deploy")
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
        activation_function=m.activation,  # relu, gelu, swish: names transformers' ACT2FN knows
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


def marian_generation_config(ck: ExportedCheckpoint) -> Any:
    """mtrain's decode settings as a GenerationConfig; pad and <s> are never generated, as in mtrain.

    early_stopping=False is transformers' stopping rule closest to mtrain's: stop when the best live
    hypothesis, scored at the current length, cannot beat the k-th finished one (True stops as soon
    as k have finished). With length_penalty 0 the two searches are the same; otherwise transformers
    divides by |Y| ** lenpen where mtrain divides by the GNMT penalty ((5 + |Y|) / 6) ** lenpen."""
    transformers = require("transformers", "deploy")
    dec = ck.decode
    return transformers.GenerationConfig(
        num_beams=dec.beam,
        length_penalty=dec.lenpen,
        early_stopping=False,
        max_length=ck.model.max_positions,
        decoder_start_token_id=BOS,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        bad_words_ids=[[PAD], [BOS]],
    )


def export_huggingface(ck: ExportedCheckpoint, output: Path, force: bool = False) -> Path:
    """Write a transformers MarianMTModel directory (safetensors) and its MarianTokenizer."""
    transformers = require("transformers", "deploy")
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
    transformers = require("transformers", "deploy")
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

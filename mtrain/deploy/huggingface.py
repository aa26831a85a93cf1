"""The Hugging Face export: an mtrain checkpoint as a `MarianMTModel` directory (weights, config,
generation config and `MarianTokenizer` files), written through transformers' own classes."""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from mtrain.deploy.export import ExportedCheckpoint, staged_directory
from mtrain.deploy.marian_weights import stream_order, to_marian
from mtrain.errors import MtrainError
from mtrain.extras import require
from mtrain.special import BOS, EOS, PAD, UNK

log = logging.getLogger("mtrain")


def marian_state_dict(ck: ExportedCheckpoint) -> dict[str, torch.Tensor]:
    """mtrain's weights under MarianMTModel's names (marian_weights' table), in Marian's stream order."""
    w, m = ck.weights, ck.model
    order = stream_order(m)
    out = {
        "model.encoder.embed_tokens.weight": w["src_embed.weight"][:, order],
        "model.decoder.embed_tokens.weight": w["tgt_embed.weight"][:, order],
        "lm_head.weight": w["output.weight"][:, order],
        "final_logits_bias": w["output.bias"][None] if m.output_bias else torch.zeros(1, w["output.weight"].size(0)),
    }
    if m.tie_embeddings == "all":
        out["model.shared.weight"] = out["model.encoder.embed_tokens.weight"]
    return {**out, **to_marian(w, m)}


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
        min_new_tokens=1,  # mtrain's search writes at least one token
    )


def export_huggingface(ck: ExportedCheckpoint, output: Path, force: bool = False) -> Path:
    """Write a transformers MarianMTModel directory (safetensors) and its MarianTokenizer."""
    transformers = require("transformers", "deploy")
    if ck.model.pre_norm:
        raise MtrainError(
            "the Hugging Face export writes a MarianMTModel, which is post-norm only, and this model is "
            "pre-norm (model.pre_norm: true); export it with --format ctranslate2 instead"
        )
    if ck.config.get("tokenizer", {}).get("case_tags"):
        log.warning(
            "this model reads UPPER CASE and Title Case input as a case tag and sentence-cased text "
            "(tokenizer.case_tags), which MarianTokenizer does not write: in transformers such input is "
            "translated as it is; mtrain and the CTranslate2 export keep the tags"
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
        with warnings.catch_warnings():  # MarianTokenizer asks for sacremoses, which only its text normalization uses
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
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

"""`mtrain import --format huggingface`: a Hugging Face MarianMTModel directory (an OPUS-MT model,
or an mtrain export) as an mtrain checkpoint, the inverse of huggingface.py's export.

What OPUS-MT directories hold and how each part maps:
- config.json (MarianConfig): post-norm layers, scaled embeddings, static sinusoidal positions in
  Marian's [sin | cos] layout (mtrain interleaves them: the residual stream is permuted back, as
  the export permutes it forward), the FFN's activation (swish in OPUS-MT), final_logits_bias
  (mtrain's model.output_bias).
- vocab.json (and target_vocab.json for separate vocabularies): Marian's own piece-to-id map over
  the pieces of source.spm and target.spm. mtrain's special ids are fixed (pad 0, unk 1, <s> 2,
  </s> 3), so the vocabulary is reordered: those four first, then every other piece in Marian's
  order; embedding and output rows move with their pieces. The checkpoint keeps the piece lists
  (the tokenizer maps sentencepiece's pieces to these ids) unless they equal the sentencepiece
  ids (an mtrain export imported again).
- The decoder starts from decoder_start_token_id: the pad token in OPUS-MT, whose embedding
  CTranslate2 calls a zero embedding. mtrain starts from <s>, so <s> gets that row: the same
  numbers go in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mtrain.config import Config, CorpusConfig, DataConfig, ModelConfig, TokenizerConfig
from mtrain.config_checks import LANGUAGE_CODE
from mtrain.data.tokenizer import Tokenizer
from mtrain.deploy.huggingface import marian_permutation
from mtrain.errors import MtrainError
from mtrain.extras import require
from mtrain.files import disk_errors
from mtrain.model.transformer import Transformer
from mtrain.run import checkpoint
from mtrain.special import BOS, EOS, PAD, UNK
from mtrain.training.initial import InitSource, directory_digest

SPECIAL_PIECES = {PAD: "<pad>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "swish"}


def read_marian(directory: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The MarianConfig and weights of a directory, read by transformers (no code runs from it)."""
    transformers = require("transformers", "deploy")
    if not (directory / "config.json").is_file():
        raise MtrainError(f"{directory} has no config.json; give a Hugging Face MarianMTModel directory")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "marian":
        raise MtrainError(
            f"{directory} holds a '{config.get('model_type')}' model; mtrain imports MarianMTModel (model_type "
            "marian) only, e.g. the OPUS-MT models"
        )
    transformers.utils.logging.disable_progress_bar()
    model = transformers.MarianMTModel.from_pretrained(str(directory), trust_remote_code=False)
    return model.config, {k: v.detach().float() for k, v in model.state_dict().items()}


def model_config(hf: Any, directory: Path, output_bias: bool) -> ModelConfig:
    """mtrain's shape for a MarianConfig; what mtrain cannot express is refused by name."""
    unsupported = [
        (getattr(hf, "normalize_before", False), "normalize_before: true (pre-norm)"),
        (not getattr(hf, "scale_embedding", True), "scale_embedding: false"),
        (hf.encoder_attention_heads != hf.decoder_attention_heads, "different encoder and decoder heads"),
        (hf.encoder_ffn_dim != hf.decoder_ffn_dim, "different encoder and decoder FFN widths"),
        (hf.activation_function not in ACTIVATIONS, f"activation_function {hf.activation_function}"),
        (hf.d_model % 2 or hf.d_model % hf.encoder_attention_heads, f"d_model {hf.d_model}"),
    ]
    for refused, what in unsupported:
        if refused:
            raise MtrainError(
                f"{directory}: {what} is not supported by mtrain's Transformer; this model cannot be imported"
            )
    separate = getattr(hf, "separate_vocabs", False) or not getattr(hf, "share_encoder_decoder_embeddings", True)
    tied = getattr(hf, "tie_word_embeddings", True)
    return ModelConfig(
        d_model=hf.d_model,
        heads=hf.encoder_attention_heads,
        encoder_layers=hf.encoder_layers,
        decoder_layers=hf.decoder_layers,
        d_ff=hf.encoder_ffn_dim,
        dropout=hf.dropout,
        attention_dropout=hf.attention_dropout,
        activation_dropout=hf.activation_dropout,
        tie_embeddings="none" if not tied else ("decoder" if separate else "all"),
        activation=ACTIVATIONS[hf.activation_function],
        output_bias=output_bias,
        max_positions=hf.max_position_embeddings,
    )


def separate_vocabularies(directory: Path, hf: Any) -> bool:
    """Whether the tokenizer keeps a target_vocab.json (MarianTokenizer's separate_vocabs, in
    tokenizer_config.json), else whether the config keeps the embeddings apart."""
    path = directory / "tokenizer_config.json"
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return bool(saved.get("separate_vocabs", not getattr(hf, "share_encoder_decoder_embeddings", True)))


def vocabularies(directory: Path, separate: bool) -> tuple[list[str], list[str]]:
    """Marian's pieces in Marian's id order: (source, target)."""
    names = ["vocab.json", "target_vocab.json" if separate else "vocab.json"]
    lists = []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise MtrainError(f"{directory} has no {name} (the MarianTokenizer's vocabulary); it cannot be imported")
        mapping = json.loads(path.read_text(encoding="utf-8"))
        pieces = [None] * len(mapping)
        for piece, index in mapping.items():
            if not 0 <= index < len(pieces) or pieces[index] is not None:
                raise MtrainError(f"{path}: ids are not 0..{len(pieces) - 1}, each once; it cannot be imported")
            pieces[index] = piece
        lists.append(pieces)
    return lists[0], lists[1]


def reorder(pieces: list[str], start_id: int) -> tuple[list[str], torch.Tensor]:
    """mtrain's vocabulary for Marian's `pieces`: the four specials at mtrain's ids, then the rest
    in Marian's order; and for each mtrain id the Marian row it takes (<s>: the decoder start row)."""
    where = {p: i for i, p in enumerate(pieces)}
    for special in ("<pad>", "</s>", "<unk>"):
        if special not in where:
            raise MtrainError(f"the Marian vocabulary has no {special}; it cannot be imported")
    rows = [where["<pad>"], where["<unk>"], start_id, where["</s>"]]
    taken = set(rows) | {where.get("<s>", -1)}
    rest = [i for i in range(len(pieces)) if i not in taken]
    return [SPECIAL_PIECES[i] for i in range(4)] + [pieces[i] for i in rest], torch.tensor(rows + rest)


def mtrain_weights(hf: dict[str, torch.Tensor], m: ModelConfig, src_rows: torch.Tensor, tgt_rows: torch.Tensor) -> dict:
    """Marian's weights under mtrain's names, rows in mtrain's vocabulary order, the residual stream
    back in mtrain's order (the inverse of the export's permutation)."""
    inverse = torch.argsort(marian_permutation(m.d_model))
    out = {
        "src_embed.weight": hf["model.encoder.embed_tokens.weight"][src_rows][:, inverse],
        "tgt_embed.weight": hf["model.decoder.embed_tokens.weight"][tgt_rows][:, inverse],
        "output.weight": hf["lm_head.weight"][tgt_rows][:, inverse],
    }
    if m.output_bias:
        out["output.bias"] = hf["final_logits_bias"][0][tgt_rows]
    for stack, count in (("encoder", m.encoder_layers), ("decoder", m.decoder_layers)):
        for i in range(count):
            out.update(_mtrain_layer(hf, inverse, stack, i))
    return out


def _mtrain_layer(hf: dict, inverse: torch.Tensor, stack: str, i: int) -> dict[str, torch.Tensor]:
    ours, theirs, out = f"{stack}.{i}", f"model.{stack}.layers.{i}", {}

    def reads(name: str, hf_name: str) -> None:  # from the residual stream: its input features move back
        out[f"{name}.weight"], out[f"{name}.bias"] = hf[f"{hf_name}.weight"][:, inverse], hf[f"{hf_name}.bias"]

    def writes(name: str, hf_name: str) -> None:  # into the residual stream (and layer norms): outputs move back
        out[f"{name}.weight"], out[f"{name}.bias"] = hf[f"{hf_name}.weight"][inverse], hf[f"{hf_name}.bias"][inverse]

    def attention(name: str, hf_name: str) -> None:
        projections = [f"{hf_name}.{p}" for p in ("q_proj", "k_proj", "v_proj")]
        out[f"{name}.in_proj.weight"] = torch.cat([hf[f"{p}.weight"] for p in projections])[:, inverse]
        out[f"{name}.in_proj.bias"] = torch.cat([hf[f"{p}.bias"] for p in projections])
        writes(f"{name}.out_proj", f"{hf_name}.out_proj")

    attention(f"{ours}.self_attn", f"{theirs}.self_attn")
    writes(f"{ours}.sub1.norm", f"{theirs}.self_attn_layer_norm")
    if stack == "decoder":
        attention(f"{ours}.cross_attn", f"{theirs}.encoder_attn")
        writes(f"{ours}.sub2.norm", f"{theirs}.encoder_attn_layer_norm")
    reads(f"{ours}.ffn.0", f"{theirs}.fc1")
    writes(f"{ours}.ffn.2", f"{theirs}.fc2")
    writes(f"{ours}.sub{3 if stack == 'decoder' else 2}.norm", f"{theirs}.final_layer_norm")
    return out


def languages(directory: Path, src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    """The language pair: given, else the MarianTokenizer's source_lang/target_lang."""
    path = directory / "tokenizer_config.json"
    saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    pair = (src_lang or saved.get("source_lang"), tgt_lang or saved.get("target_lang"))
    if not all(code and LANGUAGE_CODE.fullmatch(str(code)) for code in pair):
        raise MtrainError(
            f"{directory} does not name its languages as codes (tokenizer_config.json: source_lang "
            f"{saved.get('source_lang')!r}, target_lang {saved.get('target_lang')!r}); give --src-lang and --tgt-lang"
        )
    return str(pair[0]), str(pair[1])


def marian_state(directory: Path, src_lang: str | None = None, tgt_lang: str | None = None) -> dict:
    """The checkpoint state of a MarianMTModel directory (weights only, step 0)."""
    directory = Path(directory)
    hf_config, hf_weights = read_marian(directory)
    model = model_config(hf_config, directory, output_bias=bool(hf_weights["final_logits_bias"].any()))
    shared = not separate_vocabularies(directory, hf_config)  # one vocab.json for both sides
    src_pieces, tgt_pieces = vocabularies(directory, separate=not shared)
    start = hf_config.decoder_start_token_id
    start = start if start is not None else tgt_pieces.index("<pad>")
    # <s> never starts a source: with one shared vocabulary its row is the decoder's, else any row
    src_vocab, src_rows = reorder(src_pieces, start if shared else src_pieces.index("<pad>"))
    tgt_vocab, tgt_rows = reorder(tgt_pieces, start)
    spm = _sentencepiece(directory, {"src": src_vocab, "tgt": tgt_vocab}, shared)
    pair = languages(directory, src_lang, tgt_lang)
    config = Config(
        out_dir=str(directory),
        data=DataConfig(src_lang=pair[0], tgt_lang=pair[1], train=[CorpusConfig(path=str(directory))]),
        tokenizer=TokenizerConfig(vocab_size=len(src_vocab), joint=shared),
        model=model,
    )
    generation = directory / "generation_config.json"
    if generation.is_file():
        config.decode.beam = int(json.loads(generation.read_text(encoding="utf-8")).get("num_beams") or 4)
    weights = mtrain_weights(hf_weights, model, src_rows, tgt_rows)
    return {
        "format": checkpoint.FORMAT,
        "model": weights,
        "config": config.to_dict(),
        "spm": spm,
        "progress": {"step": 0},
        "imported_from": str(directory),
    }


def _sentencepiece(directory: Path, vocab: dict, shared: bool) -> dict:
    """The checkpoint's "spm" entry: both sentencepiece models and, unless they are the same as the
    sentencepiece ids, the piece lists."""
    models = []
    for name in ("source.spm", "target.spm"):
        if not (directory / name).is_file():
            raise MtrainError(f"{directory} has no {name} (the MarianTokenizer's sentencepiece model)")
        models.append((directory / name).read_bytes())
    src, tgt = models
    plain = Tokenizer(src, None if shared and src == tgt else tgt)
    own_ids = [plain.src_piece(i) for i in range(plain.src_vocab_size)] == vocab["src"] and [
        plain.tgt_piece(i) for i in range(plain.tgt_vocab_size)
    ] == vocab["tgt"]
    return {"src": src, "tgt": plain.tgt_model, "vocab": None if own_ids else vocab}


def check_loads(state: dict, directory: Path) -> None:
    """The mapped weights fill mtrain's Transformer exactly (every tensor, every shape)."""
    tokenizer = Tokenizer.from_state(state["spm"])
    model = Transformer(ModelConfig(**state["config"]["model"]), tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise MtrainError(
            f"{directory}: its weights do not fit the model its config.json describes ({first})"
        ) from None


def import_huggingface(
    directory: Path, output: Path, src_lang: str | None = None, tgt_lang: str | None = None, force: bool = False
) -> dict:
    """Write the checkpoint of a MarianMTModel directory to `output`; returns its state."""
    directory, output = Path(directory), Path(output)
    if not directory.is_dir():
        raise MtrainError(f"{directory} is not a directory; give a Hugging Face MarianMTModel directory")
    if output.is_dir():
        raise MtrainError(f"--output {output} is a directory; give a file name, e.g. {output / 'model.pt'}")
    if output.exists() and not force:
        raise MtrainError(f"{output} exists; pass --force to replace it, or give another --output")
    state = marian_state(directory, src_lang, tgt_lang)
    check_loads(state, directory)
    with disk_errors(f"writing {output}"):
        checkpoint.save(state, output)
    return state


def marian_init_source(directory: str | Path, src_lang: str, tgt_lang: str) -> InitSource:
    """train.init_from given a MarianMTModel directory: imported in memory, hashed for the record."""
    directory = Path(directory)
    state = marian_state(directory, src_lang, tgt_lang)
    check_loads(state, directory)
    return InitSource(directory, state, directory_digest(directory))

"""`mtrain import --format huggingface`: a Hugging Face MarianMTModel directory (an OPUS-MT model,
or an mtrain export) as an mtrain checkpoint, the inverse of huggingface.py's export.

What OPUS-MT directories hold and how each part maps:
- config.json (MarianConfig): post-norm layers, scaled embeddings, static sinusoidal positions in
  Marian's [sin | cos] layout (the model gets `model.positions: halves`, so every weight is read
  as it is: marian_weights.py holds the one name table of import and export), the FFN's activation
  (swish in OPUS-MT), final_logits_bias (mtrain's model.output_bias).
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
import re
from pathlib import Path
from typing import Any

import torch

from mtrain.config import Config, CorpusConfig, DataConfig, DecodeConfig, ModelConfig, TokenizerConfig
from mtrain.config_checks import (
    LANGUAGE_CODE,
    MAX_BEAM,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_POSITIONS,
    MAX_VOCABULARY,
    MAX_WIDTH,
)
from mtrain.data.tokenizer import Tokenizer
from mtrain.deploy.marian_weights import from_marian
from mtrain.errors import MtrainError
from mtrain.extras import require
from mtrain.files import disk_errors
from mtrain.model.transformer import Transformer
from mtrain.run import checkpoint
from mtrain.special import BOS, EOS, PAD, UNK
from mtrain.training.initial import InitSource, directory_digest

SPECIAL_PIECES = {PAD: "<pad>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "swish"}


def read_json(path: Path) -> dict:
    """A JSON object from a model directory, or a one-line error that names the file."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MtrainError(f"{path} is not valid JSON ({e}); it cannot be imported") from None
    if not isinstance(value, dict):
        raise MtrainError(f"{path} holds a JSON {type(value).__name__}, not an object; it cannot be imported")
    return value


# MarianConfig's sizes, held to the bounds of mtrain's own configs before anything is allocated
SIZES = {
    "d_model": MAX_WIDTH, "encoder_ffn_dim": MAX_WIDTH, "decoder_ffn_dim": MAX_WIDTH,
    "encoder_attention_heads": MAX_HEADS, "decoder_attention_heads": MAX_HEADS,
    "encoder_layers": MAX_LAYERS, "decoder_layers": MAX_LAYERS,
    "max_position_embeddings": MAX_POSITIONS, "vocab_size": MAX_VOCABULARY, "decoder_vocab_size": MAX_VOCABULARY,
}  # fmt: skip
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def check_sizes(config: dict, path: Path) -> None:
    for key, most in SIZES.items():
        value = config.get(key)
        if value is None:  # MarianConfig's default (or, for decoder_vocab_size, vocab_size)
            continue
        if type(value) is not int or not 1 <= value <= most:
            raise MtrainError(
                f"{path}: {key} must be a whole number from 1 to {most}, got {value!r}; it cannot be imported"
            )


def read_marian(directory: Path) -> tuple[Any, dict[str, torch.Tensor]]:
    """The MarianConfig and weights of a directory, read by transformers (no code runs from it)
    once its files are known to be sound: what transformers would allocate is within bounds."""
    transformers = require("transformers", "deploy")
    if not (directory / "config.json").is_file():
        raise MtrainError(f"{directory} has no config.json; give a Hugging Face MarianMTModel directory")
    config = read_json(directory / "config.json")
    if config.get("model_type") != "marian":
        raise MtrainError(
            f"{directory} holds a '{config.get('model_type')}' model; mtrain imports MarianMTModel (model_type "
            "marian) only, e.g. the OPUS-MT models"
        )
    check_sizes(config, directory / "config.json")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise MtrainError(f"{directory} has no weights ({' or '.join(WEIGHT_FILES)}); it cannot be imported")
    transformers.utils.logging.disable_progress_bar()
    try:
        model = transformers.MarianMTModel.from_pretrained(str(directory), trust_remote_code=False)
    except Exception as e:  # whatever transformers meets in a damaged directory is about that directory
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MtrainError(
            f"{directory}: transformers cannot load this model ({first}); it cannot be imported"
        ) from None
    return model.config, {k: v.detach().float() for k, v in model.state_dict().items()}


def model_config(hf: Any, directory: Path, output_bias: bool, separate: bool) -> ModelConfig:
    """mtrain's shape for a MarianConfig (`separate`: the vocabularies are); what mtrain cannot
    express is refused by name."""
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
    one_embedding = getattr(hf, "share_encoder_decoder_embeddings", True) and not separate
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
        tie_embeddings="none" if not tied else ("all" if one_embedding else "decoder"),
        activation=ACTIVATIONS[hf.activation_function],
        output_bias=output_bias,
        max_positions=hf.max_position_embeddings,
        positions="halves",  # Marian's sinusoidal layout: its weights are read as they are
    )


def separate_vocabularies(settings: dict, hf: Any) -> bool:
    """Whether the tokenizer keeps a target_vocab.json (MarianTokenizer's separate_vocabs, in
    tokenizer_config.json: `settings`), else whether the config keeps the embeddings apart: the one
    place this is decided."""
    return bool(settings.get("separate_vocabs", not getattr(hf, "share_encoder_decoder_embeddings", True)))


def tokenizer_settings(directory: Path) -> dict:
    """The MarianTokenizer's tokenizer_config.json ({} without one)."""
    path = directory / "tokenizer_config.json"
    return read_json(path) if path.is_file() else {}


def vocabularies(directory: Path, separate: bool, rows: tuple[int, int]) -> tuple[list[str], list[str]]:
    """Marian's pieces in Marian's id order: (source, target), one per embedding row (`rows`)."""
    names = ["vocab.json", "target_vocab.json" if separate else "vocab.json"]
    lists = []
    for name, count in zip(names, rows):
        path = directory / name
        if not path.is_file():
            raise MtrainError(f"{directory} has no {name} (the MarianTokenizer's vocabulary); it cannot be imported")
        mapping = read_json(path)
        if len(mapping) != count:
            raise MtrainError(
                f"{path} has {len(mapping)} pieces but the model's embedding has {count} rows (the vocabulary of "
                "another model?); it cannot be imported"
            )
        pieces: list[str | None] = [None] * count
        for piece, index in mapping.items():
            if type(index) is not int or not 0 <= index < count or pieces[index] is not None:
                raise MtrainError(
                    f"{path}: ids are not the whole numbers 0..{count - 1}, each once; it cannot be imported"
                )
            pieces[index] = piece
        lists.append(pieces)
    return lists[0], lists[1]


def reorder(pieces: list[str], start_id: int) -> tuple[list[str], torch.Tensor]:
    """mtrain's vocabulary for Marian's `pieces`: the four specials at mtrain's ids, then every
    other piece in Marian's order; and for each mtrain id the Marian row it takes (<s>: the decoder
    start row, a second copy of it when that row is an ordinary piece's)."""
    where = {p: i for i, p in enumerate(pieces)}
    for special in ("<pad>", "</s>", "<unk>"):
        if special not in where:
            raise MtrainError(f"the Marian vocabulary has no {special}; it cannot be imported")
    rows = [where["<pad>"], where["<unk>"], start_id, where["</s>"]]
    # the start row may be an ordinary piece (separate vocabularies: the source's pad id): it stays
    taken = {where["<pad>"], where["<unk>"], where["</s>"], where.get("<s>", -1)}
    rest = [i for i in range(len(pieces)) if i not in taken]
    return [SPECIAL_PIECES[i] for i in range(4)] + [pieces[i] for i in rest], torch.tensor(rows + rest)


def mtrain_weights(hf: dict[str, torch.Tensor], m: ModelConfig, src_rows: torch.Tensor, tgt_rows: torch.Tensor) -> dict:
    """Marian's weights under mtrain's names (marian_weights' table), rows in mtrain's vocabulary
    order; the model keeps Marian's position layout (halves), so no tensor is permuted."""
    out = {
        "src_embed.weight": hf["model.encoder.embed_tokens.weight"][src_rows],
        "tgt_embed.weight": hf["model.decoder.embed_tokens.weight"][tgt_rows],
        "output.weight": hf["lm_head.weight"][tgt_rows],
    }
    if m.output_bias:
        out["output.bias"] = hf["final_logits_bias"][0][tgt_rows]
    return {**out, **from_marian(hf, m)}


def languages(directory: Path, saved: dict, src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    """The language pair: given, else the MarianTokenizer's source_lang/target_lang (in `saved`)."""
    pair = (src_lang or saved.get("source_lang"), tgt_lang or saved.get("target_lang"))
    if not all(code and LANGUAGE_CODE.fullmatch(str(code)) for code in pair):
        raise MtrainError(
            f"{directory} does not name its languages as codes (tokenizer_config.json: source_lang "
            f"{saved.get('source_lang')!r}, target_lang {saved.get('target_lang')!r}); give --src-lang and --tgt-lang"
        )
    return str(pair[0]), str(pair[1])


def marian_state(
    directory: Path, src_lang: str | None = None, tgt_lang: str | None = None, config_pair: bool = False
) -> dict:
    """The checkpoint state of a MarianMTModel directory (weights only, step 0). The languages are
    --src-lang/--tgt-lang overrides, or with `config_pair` a config's pair the model must translate."""
    directory = Path(directory)
    settings = tokenizer_settings(directory)
    if config_pair:
        check_pair(directory, settings, src_lang, tgt_lang)
    hf_config, hf_weights = read_marian(directory)
    shared = not separate_vocabularies(settings, hf_config)  # one vocab.json for both sides
    model = model_config(hf_config, directory, bool(hf_weights["final_logits_bias"].any()), not shared)
    rows = (hf_weights["model.encoder.embed_tokens.weight"].size(0), hf_weights["lm_head.weight"].size(0))
    src_pieces, tgt_pieces = vocabularies(directory, not shared, rows)
    start = hf_config.decoder_start_token_id
    start = start if start is not None else tgt_pieces.index("<pad>")
    # <s> never starts a source: with one shared vocabulary its row is the decoder's, else any row
    src_vocab, src_rows = reorder(src_pieces, start if shared else src_pieces.index("<pad>"))
    tgt_vocab, tgt_rows = reorder(tgt_pieces, start)
    spm = _sentencepiece(directory, {"src": src_vocab, "tgt": tgt_vocab}, shared)
    pair = languages(directory, settings, src_lang, tgt_lang)
    config = Config(
        out_dir=str(directory),
        data=DataConfig(src_lang=pair[0], tgt_lang=pair[1], train=[CorpusConfig(path=str(directory))]),
        tokenizer=TokenizerConfig(vocab_size=len(src_vocab), joint=shared),
        model=model,
    )
    config.decode.beam = beam_size(directory)
    weights = mtrain_weights(hf_weights, model, src_rows, tgt_rows)
    return {
        "format": checkpoint.FORMAT,
        "model": weights,
        "config": config.to_dict(),
        "spm": spm,
        "progress": {"step": 0},
        "imported_from": str(directory),
    }


def beam_size(directory: Path) -> int:
    """generation_config.json's num_beams (mtrain's default without one), held to decode.beam's bounds."""
    path = directory / "generation_config.json"
    beams = read_json(path).get("num_beams") if path.is_file() else None
    if beams is None:
        return DecodeConfig().beam
    if type(beams) is not int or not 1 <= beams <= MAX_BEAM:
        raise MtrainError(
            f"{path}: num_beams must be a whole number from 1 to {MAX_BEAM}, got {beams!r}; fix it and import again"
        )
    return beams


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
    state = marian_state(directory, src_lang, tgt_lang, config_pair=True)
    check_loads(state, directory)
    return InitSource(directory, state, directory_digest(directory))


def check_pair(directory: Path, saved: dict, src_lang: str, tgt_lang: str) -> None:
    """A Marian model fine-tunes only on the pair it translates (tokenizer_config.json's source_lang
    and target_lang in `saved`, where it names them); a multilingual one is stated by importing it
    for the pair."""
    have = (saved.get("source_lang"), saved.get("target_lang"))
    if all(have) and [_language(code) for code in have] != [_language(src_lang), _language(tgt_lang)]:
        raise MtrainError(
            f"train.init_from {directory} translates {have[0]}->{have[1]} (its tokenizer_config.json), not the "
            f"config's {src_lang}->{tgt_lang}; give a model of this pair, or, if it covers it (a multilingual "
            f"model), mtrain import {directory} --src-lang {src_lang} --tgt-lang {tgt_lang} -o model.pt and start "
            "from that file"
        )


def _language(code: object) -> str:
    """The primary language subtag: en-US and en_GB are en."""
    return re.split("[-_]", str(code).lower())[0]

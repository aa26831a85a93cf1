"""`mtrain import --format huggingface`: MarianMTModel directories (mtrain exports, OPUS-MT-shaped
models built here with random weights) as mtrain checkpoints that compute what Hugging Face does."""

from __future__ import annotations

import io
import json
import time

import pytest
import safetensors.torch
import sentencepiece as spm
import torch
import yaml

from mtrain.data.demo import generate
from mtrain.deploy.ctranslate2 import export_ctranslate2
from mtrain.deploy.engines import open_engine
from mtrain.deploy.export import ExportedCheckpoint
from mtrain.deploy.huggingface import export_huggingface
from mtrain.deploy.marian_import import import_huggingface, marian_init_source
from mtrain.deploy.serve.app import create_app
from mtrain.deploy.serve.worker import ServeLimits
from mtrain.errors import MtrainError
from mtrain.inference.translator import encode_sources
from mtrain.run import checkpoint
from mtrain.special import BOS, EOS

from helpers import run_cli

transformers = pytest.importorskip("transformers")  # the deploy extra; make setup installs it, CI runs it
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402


def test_an_exported_model_imported_again_is_the_same_model(demo_run, tmp_path):
    ckpt = demo_run / "checkpoint_avg.pt"
    exported = export_huggingface(ExportedCheckpoint(ckpt), tmp_path / "hf")
    result = run_cli("import", str(exported), "-o", str(tmp_path / "back.pt"))
    assert result.returncode == 0, result.stderr
    ours, back = (open_engine(path, engine="torch", device="cpu") for path in (ckpt, tmp_path / "back.pt"))
    lines = (demo_run / "data" / "test.en.txt").read_text().splitlines()[:40]
    assert back.translate(lines, beam=1) == ours.translate(lines, beam=1)
    assert back.translate(lines, beam=4) == ours.translate(lines, beam=4)
    src = torch.tensor([ids + [EOS] for ids in ours.tokenizer.encode_src(lines[:1])])
    tgt = torch.tensor([[BOS, 20, 21, 22, 23]])
    with torch.no_grad():
        # the same numbers in another order of the residual stream (Marian's halves): float rounding only
        assert (ours.model(src, tgt) - back.model(src, tgt)).abs().max().item() <= 1e-4
    assert run_cli("import", str(exported), "-o", str(tmp_path / "back.pt")).stderr.startswith(
        f"error: {tmp_path / 'back.pt'} exists; pass --force"
    )
    # export -> import -> export: the same tensors, bit for bit (one name table, read both ways)
    again = export_huggingface(ExportedCheckpoint(tmp_path / "back.pt"), tmp_path / "hf-again")
    first, second = (safetensors.torch.load_file(str(d / "model.safetensors")) for d in (exported, again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def sentencepiece_model(lines: list[str], size: int) -> bytes:
    """A model with sentencepiece's default ids (unk 0, <s> 1, </s> 2), as OPUS-MT's are."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buffer, vocab_size=size, minloglevel=2, hard_vocab_limit=False
    )
    return buffer.getvalue()


# pieces OPUS-MT vocabularies hold beyond the sentencepiece models': a multilingual model's target
# tokens, and a piece of the vocabulary no sentencepiece model cuts
VOCABULARY_ONLY = [">>fra<<", ">>deu<<", "\u2581qqdoor"]


def marian_vocab(*models: bytes) -> dict[str, int]:
    """Marian's vocab.json: </s> 0, <unk> 1, the models' other pieces, <pad> last."""
    pieces = ["</s>", "<unk>"]
    for model in models:
        processor = spm.SentencePieceProcessor(model_proto=model)
        pieces += [
            p for p in map(processor.id_to_piece, range(processor.get_piece_size())) if p not in pieces + ["<s>"]
        ]
    return {p: i for i, p in enumerate(pieces + VOCABULARY_ONLY + ["<pad>"])}


def opus_mt_directory(tmp_path, separate: bool):
    """An OPUS-MT-shaped MarianMTModel: swish, tied embeddings, final_logits_bias, the pad token as
    decoder start; one vocab.json over two sentencepiece models, or one per side."""
    en, de = generate(400, seed=3)
    src_spm, tgt_spm = sentencepiece_model(en, 90), sentencepiece_model(de, 110)
    files = tmp_path / "files"
    files.mkdir()
    (files / "source.spm").write_bytes(src_spm)
    (files / "target.spm").write_bytes(tgt_spm)
    vocab = marian_vocab(src_spm) if separate else marian_vocab(src_spm, tgt_spm)
    target_vocab = marian_vocab(tgt_spm) if separate else vocab
    (files / "vocab.json").write_text(json.dumps(vocab))
    (files / "target_vocab.json").write_text(json.dumps(target_vocab))
    tokenizer = transformers.MarianTokenizer(
        str(files / "source.spm"), str(files / "target.spm"), str(files / "vocab.json"),
        target_vocab_file=str(files / "target_vocab.json"), separate_vocabs=separate,
        source_lang="en", target_lang="de",
    )  # fmt: skip
    pad = tokenizer.pad_token_id
    config = transformers.MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(target_vocab), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        activation_function="swish", max_position_embeddings=64, scale_embedding=True, pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=pad, forced_eos_token_id=tokenizer.eos_token_id,
        share_encoder_decoder_embeddings=not separate, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:
                p.normal_(0, 0.3)
        model.final_logits_bias.normal_(0, 1.0)
    out = tmp_path / "opus-mt-en-de"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, model, tokenizer, en[-5:]


def test_a_multilingual_opus_mt_model_translates_into_the_language_asked_for(tmp_path):
    directory, hf_model, hf_tokenizer, lines = opus_mt_directory(tmp_path, separate=False)
    import_huggingface(directory, tmp_path / "opus.pt")
    as_typed = open_engine(tmp_path / "opus.pt", device="cpu")
    assert as_typed.tokenizer.target_languages == ["fra", "deu"]  # read from the vocabulary
    outputs = {}
    for asked, code in (("fr", "fra"), ("fre", "fra"), ("deu", "deu")):
        engine = open_engine(tmp_path / "opus.pt", device="cpu", tgt_lang=asked)
        outputs[asked] = engine.translate(lines, beam=1)
        assert outputs[asked] == as_typed.translate([f">>{code}<< {line}" for line in lines], beam=1)
        first = encode_sources(engine, lines[:1])[0][0]
        assert engine.tokenizer.src_piece(first) == f">>{code}<<"  # the token first, one piece
    for line, expected in zip(lines, outputs["fr"]):  # what transformers generates from the token and the line
        ids = hf_tokenizer([f">>fra<< {line}"], return_tensors="pt")
        limit = min(len(ids.input_ids[0]) - 1 + 50, 63)
        generated = hf_model.generate(
            **ids, num_beams=1, do_sample=False, max_new_tokens=limit, bad_words_ids=[[hf_tokenizer.pad_token_id]]
        )
        assert hf_tokenizer.decode(generated[0], skip_special_tokens=True) == expected
    with pytest.raises(MtrainError, match="the model translates into fra, deu; 'es' is none of them"):
        open_engine(tmp_path / "opus.pt", device="cpu", tgt_lang="es")
    served = {"fr": outputs["fr"], "deu": outputs["deu"]}
    app = create_app(lambda: as_typed, ServeLimits(max_wait_ms=0))
    with TestClient(app) as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.05)
        assert client.get("/info").json()["target_languages"] == ["fra", "deu"]
        for language, expected in served.items():
            answer = client.post("/translate", json={"text": lines, "tgt_lang": language, "beam": 1})
            assert answer.json()["translations"] == expected
        refused = client.post("/translate", json={"text": lines, "tgt_lang": "es"})
        assert refused.status_code == 422 and "'es' is none of them" in refused.json()["error"]


@pytest.mark.parametrize("separate", [False, True], ids=["joint-vocab", "separate-vocabs"])
def test_an_opus_mt_model_computes_what_hugging_face_computes(tmp_path, separate):
    directory, hf_model, hf_tokenizer, lines = opus_mt_directory(tmp_path, separate)
    state = import_huggingface(directory, tmp_path / "opus.pt")
    assert state["config"]["model"]["activation"] == "swish" and state["config"]["model"]["output_bias"]
    # Marian's position layout is read, not permuted away: every layer's tensors are Marian's own
    assert state["config"]["model"]["positions"] == "halves"
    theirs = hf_model.state_dict()
    assert torch.equal(state["model"]["encoder.1.ffn.0.weight"], theirs["model.encoder.layers.1.fc1.weight"])
    assert torch.equal(
        state["model"]["decoder.0.sub2.norm.bias"], theirs["model.decoder.layers.0.encoder_attn_layer_norm.bias"]
    )
    assert state["config"]["model"]["tie_embeddings"] == ("decoder" if separate else "all")
    engine = open_engine(tmp_path / "opus.pt", engine="torch", device="cpu")
    # the same sentences in both id spaces: mtrain's vocabulary maps to Marian's (<s>: the decoder start)
    source_vocab = json.loads((directory / "vocab.json").read_text())
    target_ids = json.loads((directory / ("target_vocab.json" if separate else "vocab.json")).read_text())
    to_hf = torch.tensor([target_ids.get(p, hf_tokenizer.pad_token_id) for p in state["spm"]["vocab"]["tgt"]])
    pieces = [i for i in range(len(to_hf)) if i != BOS]  # <s> is the decoder start row, a copy
    assert sorted(to_hf[pieces].tolist()) == list(range(len(target_ids)))  # every Marian piece, once
    lines[:2] = [f">>fra<< {lines[0]}", f">>fra<<{lines[1]}"]  # kept whole as MarianTokenizer does
    batch = hf_tokenizer(lines[:4], return_tensors="pt", padding=True)
    ours_src = engine.tokenizer.encode_src(lines[:4])
    assert [
        [source_vocab[engine.tokenizer.src_piece(i)] for i in ids] + [hf_tokenizer.eos_token_id] for ids in ours_src
    ] == [
        [t for t, m in zip(row, mask) if m]
        for row, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist())
    ]
    width = batch.input_ids.size(1)
    src = torch.tensor([ids + [EOS] + [0] * (width - len(ids) - 1) for ids in ours_src])
    tgt = torch.tensor([[BOS, 10, 11, 12, 13, 14]] * 4)
    with torch.no_grad():
        ours = engine.model(src, tgt)
        theirs = hf_model(**batch, decoder_input_ids=to_hf[tgt]).logits
    # log-probabilities over the whole vocabulary: a dropped or duplicated piece would show
    assert (ours[..., pieces].log_softmax(-1) - theirs[..., to_hf[pieces]].log_softmax(-1)).abs().max() <= 1e-4
    # decoding as MarianTokenizer does: <unk> left out, a vocabulary-only piece's "▁" a space
    output = [engine.tokenizer.tgt_id(p) for p in ("\u2581qqdoor", "<unk>")] + ours[0].argmax(-1).tolist()
    output = [i for i in output if i != BOS]
    assert engine.tokenizer.decode_tgt(output) == hf_tokenizer.decode(to_hf[output], skip_special_tokens=True)
    assert engine.tokenizer.decode_tgt(output).startswith("qqdoor")

    greedy = engine.translate(lines, beam=1)
    for line, expected in zip(lines, greedy):  # one at a time: mtrain's length limit is per sentence
        ids = hf_tokenizer([line], return_tensors="pt")
        limit = min(len(ids.input_ids[0]) - 1 + 50, 63)
        generated = hf_model.generate(
            **ids, num_beams=1, do_sample=False, max_new_tokens=limit, bad_words_ids=[[hf_tokenizer.pad_token_id]]
        )
        assert hf_tokenizer.decode(generated[0], skip_special_tokens=True) == expected
    # its CTranslate2 export (vocabulary.json, swish, the output bias) decodes the same
    export_ctranslate2(ExportedCheckpoint(tmp_path / "opus.pt"), tmp_path / "ct2", quantization="float32")
    assert open_engine(None, model_dir=tmp_path / "ct2").translate(lines, beam=1) == greedy


def test_a_marian_directory_starts_a_fine_tuning_run(tmp_path):
    directory, *_ = opus_mt_directory(tmp_path, separate=False)
    values = {  # no model section: the shape, activation, output bias and position layout are the model's
        "out_dir": str(tmp_path / "run"),
        "data": {"train": {"demo": 300}, "valid": {"demo": 20}, "test": {}},
        "train": {"init_from": str(directory), "max_steps": 2, "save_every": 0, "log_every": 1, "lr": 1e-12},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(values))
    result = run_cli("train", "-c", str(tmp_path / "run.yaml"))
    assert result.returncode == 0, result.stderr
    imported = import_huggingface(directory, tmp_path / "opus.pt")
    trained = checkpoint.load(tmp_path / "run" / "checkpoint_last.pt")
    assert trained["spm"] == imported["spm"] and trained["spm"]["vocab"] is not None
    assert trained["init_from"]["path"] == str(directory) and trained["progress"]["step"] == 2
    # a learning rate too small to move a weight: what the run saved is what it started from
    for name, weight in trained["model"].items():
        assert torch.allclose(weight, imported["model"][name], atol=1e-6), name
    with pytest.raises(MtrainError, match=r"translates en->de \(its tokenizer_config.json\), not the config's fr->en"):
        marian_init_source(directory, "fr", "en")
    marian_init_source(directory, "en-US", "de")  # the same languages


def test_what_mtrain_cannot_express_is_refused_in_one_line(tmp_path):
    directory, *_ = opus_mt_directory(tmp_path, separate=False)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "bart"}))
    result = run_cli("import", str(directory), "-o", str(tmp_path / "x.pt"))
    assert result.returncode == 2 and "holds a 'bart' model; mtrain imports MarianMTModel" in result.stderr
    (directory / "config.json").write_text(json.dumps({**config, "scale_embedding": False}))
    result = run_cli("import", str(directory), "-o", str(tmp_path / "x.pt"))
    assert result.returncode == 2 and "scale_embedding: false is not supported" in result.stderr
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "vocab.json").unlink()
    result = run_cli("import", str(directory), "-o", str(tmp_path / "x.pt"))
    assert result.returncode == 2 and "has no vocab.json" in result.stderr
    assert not (tmp_path / "x.pt").exists()


class Pickled:  # what a pickled pytorch_model.bin may hold besides tensors: refused by weights_only loading
    pass


def _edit_json(name: str, **changes):
    def edit(directory):
        path = directory / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def _write(name: str, text: str):
    return lambda directory: (directory / name).write_text(text)


def _longer_vocab(directory):
    vocab = json.loads((directory / "vocab.json").read_text())
    (directory / "vocab.json").write_text(json.dumps({**vocab, "\u2581extra": len(vocab)}))


def _shorter_vocab(directory):
    vocab = json.loads((directory / "vocab.json").read_text())
    (directory / "vocab.json").write_text(json.dumps({p: i for p, i in vocab.items() if i < len(vocab) - 1}))


def _pickled_weights(directory):
    (directory / "model.safetensors").unlink()
    torch.save({"model.shared.weight": torch.zeros(2, 2), "x": Pickled()}, directory / "pytorch_model.bin")


MALFORMED = {
    "vocab longer than the embedding": (_longer_vocab, "pieces but the model's embedding has"),
    "vocab shorter than the embedding": (_shorter_vocab, "pieces but the model's embedding has"),
    "vocab with string ids": (_edit_json("vocab.json", **{"\u2581a": "3"}), "ids are not the whole numbers"),
    "vocab with float ids": (_edit_json("vocab.json", **{"</s>": 0.0}), "ids are not the whole numbers"),
    "vocab a list": (_write("vocab.json", "[1, 2]"), "vocab.json holds a JSON list, not an object"),
    "vocab truncated": (_write("vocab.json", '{"</s>": 0, "<un'), "vocab.json is not valid JSON"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "has no weights (model.safetensors"),
    "config truncated": (_write("config.json", '{"model_type": "mar'), "config.json is not valid JSON"),
    "config a list": (_write("config.json", "[]"), "config.json holds a JSON list"),
    "positions 1e12": (_edit_json("config.json", max_position_embeddings=1e12), "max_position_embeddings must be"),
    "d_model 1e9": (_edit_json("config.json", d_model=10**9), "d_model must be a whole number from 1 to 65536"),
    "vocab_size -5": (_edit_json("config.json", vocab_size=-5), "vocab_size must be a whole number"),
    "vocab_size not the weights'": (_edit_json("config.json", vocab_size=500), "transformers cannot load"),
    "a million layers": (_edit_json("config.json", encoder_layers=10**6), "encoder_layers must be a whole number"),
    "num_beams text": (_write("generation_config.json", '{"num_beams": "abc"}'), "num_beams must be a whole"),
    "num_beams 1e9": (_write("generation_config.json", '{"num_beams": 1000000000}'), "num_beams must be a whole"),
    "tokenizer config not JSON": (_write("tokenizer_config.json", "{separate"), "tokenizer_config.json is not valid"),
    "pickled weights": (_pickled_weights, "transformers cannot load this model"),
}


def test_every_malformed_directory_is_one_line_through_import_and_init_from(tmp_path):
    """Damaged files, sizes beyond mtrain's bounds (checked before anything is allocated), pickles:
    one line each, from `mtrain import` and from train.init_from alike, and nothing written."""
    directory, *_ = opus_mt_directory(tmp_path, separate=False)
    intact = {p.name: p.read_bytes() for p in directory.iterdir()}
    for what, (damage, message) in MALFORMED.items():
        for p in directory.iterdir():
            p.unlink()
        for name, data in intact.items():
            (directory / name).write_bytes(data)
        damage(directory)
        result = run_cli("import", str(directory), "-o", str(tmp_path / "x.pt"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (what, result.stderr)
        assert message in result.stderr, (what, result.stderr)
        with pytest.raises(MtrainError, match="cannot be imported|fix it and import"):
            marian_init_source(directory, "en", "de")
    assert not (tmp_path / "x.pt").exists()

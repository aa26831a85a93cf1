"""Export: CTranslate2 and Hugging Face models give mtrain's scores and translations.

Two kinds of evidence: on the trained demo model, the exported engines translate the demo test
set as mtrain does; on randomised weights of every architecture variant (post/pre-norm, joint
or separate vocabularies, tied or untied embeddings), teacher-forced log-probabilities agree to
float precision, which catches any weight that is mapped wrongly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtrain.cli.export import export_command
from mtrain.data.store import PreparedData
from mtrain.data.tokenizer import Tokenizer
from mtrain.deploy.ctranslate2 import cached_ctranslate2, export_ctranslate2
from mtrain.deploy.engines import open_engine
from mtrain.deploy.export import ExportedCheckpoint
from mtrain.deploy.huggingface import export_huggingface
from mtrain.errors import MtrainError
from mtrain.evaluation.scores import corpus_scores
from mtrain.model.transformer import Transformer
from mtrain.special import BOS, EOS

from helpers import ENV, TINY_MODEL, run_cli, tiny_config

ctranslate2 = pytest.importorskip("ctranslate2")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def demo(demo_run):
    lines = PreparedData(demo_run / "data").raw_text("test", "en")[:150]
    torch_engine = open_engine(demo_run / "checkpoint_avg.pt", device="cpu", precision="fp32")
    return demo_run / "checkpoint_avg.pt", lines, torch_engine


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTRAIN_CACHE", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- CTranslate2, trained model


def test_ctranslate2_float32_greedy_equals_mtrain_and_beam_mostly(demo, tmp_path):
    ckpt, lines, torch_engine = demo
    out = export_ctranslate2(ExportedCheckpoint(ckpt), tmp_path / "ct2", "float32")
    ct2 = open_engine(model_dir=out, device="cpu")
    assert ct2.translate(lines, beam=1) == torch_engine.translate(lines, beam=1)
    ours, theirs = torch_engine.translate(lines, beam=4), ct2.translate(lines, beam=4)
    agree = sum(a == b for a, b in zip(ours, theirs)) / len(lines)
    assert agree >= 0.95, agree


def test_ctranslate2_int8_bleu_within_one_point_of_float32(demo, demo_run):
    ckpt, lines, _ = demo
    refs = [PreparedData(demo_run / "data").raw_text("test", "de")[: len(lines)]]
    bleu = {
        q: corpus_scores(open_engine(ckpt, engine="ctranslate2", quantization=q, device="cpu").translate(lines), refs)[
            "bleu"
        ]
        for q in ("float32", "int8")
    }
    assert bleu["float32"] > 80
    assert abs(bleu["int8"] - bleu["float32"]) <= 1.0, bleu


def test_ctranslate2_nbest_is_sorted_and_sized(demo):
    ckpt, lines, _ = demo
    results = open_engine(ckpt, engine="ctranslate2", quantization="float32", device="cpu").translate_nbest(
        lines[:10], beam=4, nbest=3
    )
    for hyps in results:
        assert len(hyps) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_conversion_is_cached_and_rebuilt_when_the_checkpoint_changes(demo, tmp_path):
    ckpt, lines, _ = demo
    copy = tmp_path / "model.pt"
    copy.write_bytes(ckpt.read_bytes())
    first = open_engine(copy, engine="ctranslate2", quantization="float32").info
    again = open_engine(copy, engine="ctranslate2", quantization="float32").info
    assert first == again
    cache = list((tmp_path / "cache" / "ctranslate2").iterdir())
    assert len(cache) == 1
    os.utime(copy, ns=(1, 1))  # "a new checkpoint": another modification time
    open_engine(copy, engine="ctranslate2", quantization="float32")
    assert len(list((tmp_path / "cache" / "ctranslate2").iterdir())) == 2
    model_bin = cached_ctranslate2(copy, "float32") / "model.bin"
    model_bin.write_bytes(model_bin.read_bytes()[:1000])  # truncated (a full disk, a crash elsewhere)
    assert open_engine(copy, engine="ctranslate2", quantization="float32").translate(lines[:3])  # converted again
    assert model_bin.stat().st_size > 1000


# ----------------------------------------------------------------------------- Hugging Face, trained model


def test_huggingface_logits_and_greedy_generate_equal_mtrain(demo, tmp_path):
    ckpt, lines, torch_engine = demo
    out = export_huggingface(ExportedCheckpoint(ckpt), tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    batch = tokenizer(lines[:16], return_tensors="pt", padding=True)
    expected_ids = [seq + [EOS] for seq in torch_engine.tokenizer.encode_src(lines[:16])]
    assert [
        [t for t, m in zip(row, mask) if m]
        for row, mask in zip(batch.input_ids.tolist(), batch.attention_mask.tolist())
    ] == expected_ids
    target = torch.tensor([[BOS, 20, 21, 22, 23, 24]] * 16)
    with torch.no_grad():
        theirs = model(**batch, decoder_input_ids=target).logits
        ours = torch_engine.model(batch.input_ids, target)
    assert (theirs - ours).abs().max().item() < 1e-4

    greedy = [hyps[0].tokens for hyps in torch_engine.translate_nbest(lines[:60], beam=1)]
    for line, expected in zip(lines, greedy):  # one at a time: mtrain's length limit is per sentence
        ids = tokenizer([line], return_tensors="pt")
        limit = min(len(ids.input_ids[0]) - 1 + 50, 127)
        generated = model.generate(**ids, num_beams=1, do_sample=False, max_new_tokens=limit - 1)[0].tolist()
        assert generated[1:] in (expected, expected + [EOS]), line  # after the start token; </s> unless cut


def test_huggingface_beam_search_equals_mtrain_with_lenpen_zero(demo, tmp_path):
    """The exported generation config's stopping rule is mtrain's: beam 4 gives mtrain's output
    (with length penalty 0; otherwise the two normalise scores differently, as documented)."""
    ckpt, lines, _ = demo
    out = export_huggingface(ExportedCheckpoint(ckpt), tmp_path / "hf")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    expected = open_engine(ckpt, device="cpu", precision="fp32", lenpen=0.0).translate(lines[:24], beam=4)
    for line, want in zip(lines[:24], expected):
        ids = tokenizer([line], return_tensors="pt")
        limit = min(len(ids.input_ids[0]) - 1 + 50, 127)
        generated = model.generate(**ids, length_penalty=0.0, max_new_tokens=limit - 1)  # num_beams 4 from the export
        assert tokenizer.decode(generated[0], skip_special_tokens=True) == want


def test_huggingface_export_carries_mtrain_generation_settings(demo, tmp_path):
    ckpt, _, _ = demo
    out = export_huggingface(ExportedCheckpoint(ckpt), tmp_path / "hf")
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["num_beams"], generation["length_penalty"]) == (4, 0.6)
    assert (generation["decoder_start_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (
        BOS,
        EOS,
        0,
    )
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "mtrain.json").read_text())["engine"] == "huggingface"


# ----------------------------------------------------------------------------- every architecture variant


def random_checkpoint(tmp_path, spm_model: bytes, separate: bool, **model) -> tuple:
    """A checkpoint of a randomised model: every weight, bias and norm parameter non-trivial."""
    config = tiny_config(tmp_path, tokenizer={"joint": not separate}, model={**TINY_MODEL, **model})
    torch.manual_seed(0)
    size = Tokenizer(spm_model).src_vocab_size
    net = Transformer(config.model, size, size)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    path = tmp_path / "random.pt"
    torch.save(
        {
            "format": 1,
            "model": net.state_dict(),
            "config": config.to_dict(),
            "spm": {"src": spm_model, "tgt": spm_model if separate else None},
            "progress": {"step": 0},
        },
        path,
    )
    return path, net


def teacher_forced(net, src: list[int], tgt: list[int]) -> list[float]:
    with torch.no_grad():
        logp = torch.log_softmax(net(torch.tensor([src + [EOS]]), torch.tensor([[BOS] + tgt])).float(), -1)[0]
    return logp.gather(-1, torch.tensor(tgt + [EOS])[:, None]).flatten().tolist()


VARIANTS = [
    dict(pre_norm=False, separate=False, tie_embeddings="all"),
    dict(pre_norm=True, separate=False, tie_embeddings="all"),
    dict(pre_norm=True, separate=True, tie_embeddings="decoder"),
    dict(pre_norm=False, separate=True, tie_embeddings="none"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_ctranslate2_scores_equal_mtrain_for_every_variant(variant, demo_run, tmp_path):
    variant = dict(variant)
    path, net = random_checkpoint(
        tmp_path, (demo_run / "data" / "spm.model").read_bytes(), variant.pop("separate"), **variant
    )
    out = export_ctranslate2(ExportedCheckpoint(path), tmp_path / "ct2", "float32")
    engine = ctranslate2.Translator(str(out), device="cpu")
    ck = ExportedCheckpoint(path)
    src_pieces, tgt_pieces = ck.src_pieces, ck.tgt_pieces
    pairs = [([5, 9, 17, 33], [8, 12, 40]), ([60, 7], [11, 90, 13, 14, 15])]
    scored = engine.score_batch(
        [[src_pieces[i] for i in s] for s, _ in pairs], [[tgt_pieces[i] for i in t] for _, t in pairs]
    )
    for (src, tgt), result in zip(pairs, scored):
        assert result.log_probs == pytest.approx(teacher_forced(net.eval(), src, tgt), abs=1e-4)


@pytest.mark.parametrize("tie", ["all", "decoder", "none"])
def test_huggingface_logits_equal_mtrain_for_tied_and_untied_embeddings(tie, demo_run, tmp_path):
    path, net = random_checkpoint(
        tmp_path, (demo_run / "data" / "spm.model").read_bytes(), tie != "all", tie_embeddings=tie
    )
    out = export_huggingface(ExportedCheckpoint(path), tmp_path / "hf")
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    src, tgt = torch.tensor([[5, 9, 17, 33, EOS]]), torch.tensor([[BOS, 8, 12, 40]])
    with torch.no_grad():
        assert (model(input_ids=src, decoder_input_ids=tgt).logits - net.eval()(src, tgt)).abs().max().item() < 1e-4


# ----------------------------------------------------------------------------- bad input


def test_pre_norm_to_huggingface_is_refused_with_the_alternative(demo_run, tmp_path):
    path, _ = random_checkpoint(tmp_path, (demo_run / "data" / "spm.model").read_bytes(), False, pre_norm=True)
    with pytest.raises(MtrainError, match="post-norm only.*--format ctranslate2"):
        export_command(path, "huggingface", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_bad_inputs_are_one_line_errors_and_leave_nothing(demo, tmp_path):
    ckpt, _, _ = demo
    garbage = tmp_path / "not-a-checkpoint.pt"
    garbage.write_bytes(b"hello")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cases = [
        (
            ["--checkpoint", str(garbage), "--format", "ctranslate2", "--output", str(tmp_path / "a")],
            "is not an mtrain checkpoint (not a PyTorch file",
        ),
        (
            ["--checkpoint", str(ckpt), "--format", "onnx", "--output", str(tmp_path / "b")],
            "--format 'onnx' is not one of",
        ),
        (["--checkpoint", str(ckpt), "--format", "ctranslate2", "--output", str(full)], "not empty; add --force"),
        (
            [
                "--checkpoint",
                str(ckpt),
                "--format",
                "ctranslate2",
                "--quantization",
                "bfloat16",
                "--output",
                str(tmp_path / "c"),
            ],
            "not supported on this CPU",
        ),
    ]
    for args, message in cases:
        result = run_cli("export", *args)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, (
            args,
            result.stderr,
        )
        assert len(result.stderr.strip().splitlines()) == 1
    assert (full / "keep.txt").read_text() == "mine" and len(list(full.iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "not-a-checkpoint.pt"]


@pytest.mark.parametrize(
    "message",
    [
        "Error while serializing: I/O error: No space left on device (os error 28)",
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })',
    ],
)
def test_a_full_disk_in_the_safetensors_writer_is_one_line_and_leaves_no_directory(
    demo, tmp_path, monkeypatch, message
):
    """safetensors (Rust) reports a full disk as a SafetensorError, not an OSError."""
    from safetensors import SafetensorError

    ckpt, _, _ = demo

    def broken_save(self, directory, *args, **kwargs):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "model.safetensors").write_bytes(b"half")
        raise SafetensorError(message)

    monkeypatch.setattr(transformers.MarianMTModel, "save_pretrained", broken_save)
    with pytest.raises(MtrainError, match="writing .*hf failed: no space left on the device; free some space; nothing"):
        export_huggingface(ExportedCheckpoint(ckpt), tmp_path / "hf")
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_says_what_to_install(demo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # what `import ctranslate2` meets when it is not installed
    with pytest.raises(MtrainError, match=r"pip install 'mtrain\[deploy\]'"):
        export_command(demo[0], "ctranslate2", tmp_path / "x")


def test_model_dir_must_be_a_ctranslate2_export(demo, tmp_path):
    ckpt, _, _ = demo
    export_huggingface(ExportedCheckpoint(ckpt), tmp_path / "hf")
    with pytest.raises(MtrainError, match="--model takes a CTranslate2 export"):
        open_engine(model_dir=tmp_path / "hf")
    with pytest.raises(MtrainError, match="not a model directory exported by mtrain"):
        open_engine(model_dir=tmp_path)
    export_ctranslate2(ExportedCheckpoint(ckpt), tmp_path / "ct2", quantization="int8")
    model_bin = tmp_path / "ct2" / "model.bin"
    model_bin.write_bytes(model_bin.read_bytes()[: model_bin.stat().st_size // 2])
    with pytest.raises(MtrainError, match="CTranslate2 cannot load .*model.bin .*damaged or incomplete: export"):
        open_engine(model_dir=tmp_path / "ct2")


# ----------------------------------------------------------------------------- the command line


def test_cli_export_and_translate_through_ctranslate2(demo, tmp_path):
    ckpt, lines, torch_engine = demo
    src = tmp_path / "src.en"
    src.write_text("\n".join(lines[:20] + [""]) + "\n")
    exported = run_cli(
        "export",
        "--checkpoint",
        str(ckpt),
        "--format",
        "ctranslate2",
        "--quantization",
        "float32",
        "--output",
        str(tmp_path / "ct2"),
    )
    assert exported.returncode == 0, exported.stderr
    by_dir = run_cli(
        "translate", "--model", str(tmp_path / "ct2"), "--input", str(src), "--beam", "1", "--threads", "1"
    )
    cache_env = {**ENV, "MTRAIN_CACHE": str(tmp_path / "cache")}
    on_the_fly = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtrain",
            "translate",
            "--checkpoint",
            str(ckpt),
            "--engine",
            "ctranslate2",
            "--quantization",
            "float32",
            "--beam",
            "1",
        ],
        input=src.read_text(),
        capture_output=True,
        text=True,
        env=cache_env,
        timeout=300,
    )
    expected = torch_engine.translate(lines[:20], beam=1) + [""]
    assert by_dir.stdout.splitlines() == expected, by_dir.stderr
    assert on_the_fly.stdout.splitlines() == expected, on_the_fly.stderr


def test_a_checkpoint_of_an_unknown_format_is_refused(demo_run, tmp_path):
    path, _ = random_checkpoint(tmp_path, (demo_run / "data" / "spm.model").read_bytes(), False)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "format": 99}, path)
    with pytest.raises(MtrainError, match="has checkpoint format 99; this mtrain .* reads format 1"):
        ExportedCheckpoint(path)


def test_a_damaged_mtrain_json_is_one_line(demo, tmp_path):
    ckpt, lines, _ = demo
    out = export_ctranslate2(ExportedCheckpoint(ckpt), tmp_path / "ct2", quantization="float32")
    (out / "mtrain.json").write_text('{"engine": "ctranslate2", "model"')
    result = run_cli("translate", "--model", str(out), input="a dog\n")
    assert result.returncode == 2 and result.stderr.startswith(f"error: {out / 'mtrain.json'} is damaged"), (
        result.stderr
    )

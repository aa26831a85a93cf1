"""train.init_from: a new run from an existing model's weights and vocabulary (fine-tuning)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml

from mtrain.config import ModelConfig
from mtrain.config_io import from_dict
from mtrain.data.store import PreparedData
from mtrain.distributed import DistInfo
from mtrain.errors import MtrainError
from mtrain.insight.report import origin_line
from mtrain.model.transformer import Transformer
from mtrain.run import checkpoint
from mtrain.special import PAD
from mtrain.training.initial import spaced_layers, student_weights
from mtrain.training.schedule import learning_rate
from mtrain.training.session import train
from mtrain.training.trainer import training_batches

from helpers import TINY_MODEL, run_cli, tiny_config, train_until_sigterm


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A small trained model to start from: its checkpoint_last.pt."""
    out = tmp_path_factory.mktemp("source")
    train(tiny_config(out, train={"max_steps": 20, "save_every": 0, "max_tokens": 1000}))
    return out / "checkpoint_last.pt"


def finetune_config(out_dir, source, **train_settings):
    """Fine-tuning on other demo pairs (the generator's first 600), with settings of its own."""
    train_values = {"init_from": str(source), "max_steps": 3, "warmup_steps": 50, "log_every": 1, "save_every": 0}
    return tiny_config(
        out_dir,
        data={"train": {"demo": 600}, "valid": {"demo": 50}, "test": {}},
        tokenizer={"vocab_size": 999},  # not used: the run takes the source model's sentencepiece model
        train={**train_values, **train_settings},
    )


@pytest.mark.parametrize("decoder_layers", [2, 1])
def test_a_fine_tuning_run_starts_from_the_weights_with_everything_else_fresh(source, tmp_path, decoder_layers):
    """Also for a student with fewer decoder layers than its source (shrink and fine-tune): it starts
    from the source's first one."""
    config = finetune_config(tmp_path / "ft", source, freeze=["embeddings"], label_smoothing=0.1)
    config.model.decoder_layers = decoder_layers
    train(config)
    parent, child = checkpoint.load(source), checkpoint.load(tmp_path / "ft" / "checkpoint_last.pt")
    assert child["spm"] == parent["spm"]

    # The first step's loss is the source model's label-smoothed loss on that batch.
    data = PreparedData(config.data_dir)
    tokenizer = data.tokenizer()
    batches = training_batches(config, data, tokenizer, DistInfo())
    (batch,) = batches.step(1, 0)  # epoch 1, its first step
    model = Transformer(config.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    model.load_state_dict(student_weights(parent, config.model))
    if decoder_layers == 1:
        assert torch.equal(model.decoder[0].ffn[0].weight, parent["model"]["decoder.0.ffn.0.weight"])
    with torch.no_grad():
        logits = model(batch.src, batch.tgt_in)
    expected = F.cross_entropy(
        logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD, label_smoothing=0.1, reduction="sum"
    ) / int((batch.tgt_out != PAD).sum())
    records = [yaml.safe_load(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["kind"] == "train")
    assert first["step"] == 1 and first["loss"] == pytest.approx(float(expected), rel=1e-5)
    # ... with a fresh schedule (warmup from this config), step counter and Adam
    assert first["lr"] == pytest.approx(learning_rate(1, config.model.d_model, 50))
    assert child["progress"]["step"] == 3 and parent["progress"]["step"] == 20
    assert {int(s["step"]) for s in child["optimizer"]["state"].values()} == {3}
    # frozen embeddings (tied: the output projection too) stay; the rest moves
    assert torch.equal(child["model"]["src_embed.weight"], parent["model"]["src_embed.weight"])
    assert not torch.equal(child["model"]["encoder.0.ffn.0.weight"], parent["model"]["encoder.0.ffn.0.weight"])
    # where it started: checkpoints, metrics.jsonl, config.yaml
    origin = {"path": str(source), "source_step": 20, "sha256": child["init_from"]["sha256"]}
    assert child["init_from"] == origin and records[0] == {
        "kind": "init_from",
        "step": 0,
        **origin,
        "time": records[0]["time"],
    }
    assert (tmp_path / "ft" / "config.yaml").read_text().startswith(f"# started from {source} (sha256 ")
    assert f"started from {source} (step 20, sha256 {origin['sha256']})" in origin_line(records)  # the report


def test_a_fine_tuning_config_names_the_model_and_the_data_and_gives_the_peak_lr(source, tmp_path):
    """No model section: the shape (and tokenizer.joint) comes from the source and is written to
    config.yaml; train.lr is the rate at the end of warmup."""
    values = {
        "out_dir": str(tmp_path / "ft"),
        "data": {"train": {"demo": 600}, "valid": {"demo": 50}, "test": {}},
        "train": {"init_from": str(source), "lr": 5e-4, "warmup_steps": 2, "max_steps": 3, "log_every": 1},
    }
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(values))
    result = run_cli("train", "-c", str(path))
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert written["model"] == checkpoint.load(source)["config"]["model"] and written["model"]["d_model"] == 64
    records = [yaml.safe_load(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["kind"] == "train"]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 5e-4 * (2 / 3) ** 0.5])  # warmup, the peak, then 1/sqrt(step)
    assert run_cli("train", "-c", str(path)).returncode == 0  # run again: the same inherited shape, nothing refused


def test_an_interrupted_fine_tuning_run_resumes_exactly(source, tmp_path):
    settings = {"max_steps": 24, "warmup_steps": 10, "save_every": 12, "freeze": ["encoder"]}
    values = {run: finetune_config(tmp_path / run, source, **settings) for run in "ab"}
    for config in values.values():
        config.model.dropout = 0.1  # dropout may differ from the source model's; its random stream resumes too
    train(values["a"])
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(values["b"].to_dict()))
    status, stderr = train_until_sigterm(["mtrain", "train", "-c", str(path)], tmp_path / "b" / "metrics.jsonl", 6)
    assert status == 130, stderr
    result = run_cli("train", "-c", str(path))
    assert result.returncode == 0 and "resumed from" in result.stderr, result.stderr
    a, b = (checkpoint.load(tmp_path / run / "checkpoint_last.pt") for run in "ab")
    assert a["init_from"] == b["init_from"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"model": {**TINY_MODEL, "d_model": 32}},
            "has model.d_model=64 but the config says 32; leave model.d_model out to take the source's",
        ),
        (
            {"model": {**TINY_MODEL, "encoder_layers": 3}},
            "has model.encoder_layers=2 but the config asks for 3; a model started from it may have 2 or fewer",
        ),
        ({"data.src_lang": "fr"}, "translates en->de but data.src_lang/tgt_lang say fr->de"),
        ({"tokenizer": {"model": "x.model"}}, "brings its own sentencepiece model(s); remove tokenizer.model"),
        (
            {"tokenizer": {"joint": False}, "model": {**TINY_MODEL, "tie_embeddings": "none"}},
            "says tokenizer.joint: false; leave tokenizer.joint out to take the source's",
        ),
        ({"train.init_from": "missing.pt"}, "checkpoint not found: missing.pt"),
        ({"train.init_from": "."}, "is a directory; give an mtrain checkpoint, or a Hugging Face MarianMTModel"),
        ({"out_dir": "SOURCE_RUN"}, "holds a run that did not start from train.init_from (its checkpoint_last.pt)"),
    ],
)
def test_a_source_model_the_config_disagrees_with_is_refused(source, tmp_path, change, message):
    values = finetune_config(tmp_path / "ft", source).to_dict()
    for key, value in change.items():
        value = str(source.parent) if value == "SOURCE_RUN" else value  # the source model's own run directory
        section, _, name = key.partition(".")
        if name:
            values[section][name] = value
        else:
            values[section] = value
    with pytest.raises(MtrainError) as error:
        train(from_dict(values))
    assert message in str(error.value)
    assert not (tmp_path / "ft" / "data").exists()  # refused before any work


def test_a_student_takes_evenly_spaced_layers_the_first_and_the_last_among_them():
    assert [spaced_layers(3, n) for n in (1, 2, 3)] == [[0], [0, 2], [0, 1, 2]]
    assert spaced_layers(6, 3) == [0, 2, 5] and spaced_layers(12, 4) == [0, 4, 7, 11]
    state = {
        "config": {"model": {"encoder_layers": 2, "decoder_layers": 3}},
        "model": {
            name: torch.tensor(i)
            for i, name in enumerate(
                ["src_embed.w", "encoder.0.a", "encoder.1.a", "decoder.0.b", "decoder.1.b", "decoder.2.b"]
            )
        },
    }
    student = student_weights(state, ModelConfig(encoder_layers=2, decoder_layers=2))
    assert {name: int(t) for name, t in student.items()} == {
        "src_embed.w": 0,
        "encoder.0.a": 1,
        "encoder.1.a": 2,
        "decoder.0.b": 3,
        "decoder.1.b": 5,
    }


def test_freeze_needs_init_from_and_known_parts(tmp_path):
    with pytest.raises(MtrainError, match="train.freeze needs train.init_from"):
        tiny_config(tmp_path, train={"freeze": ["encoder"]})
    with pytest.raises(MtrainError, match=r"train.freeze \['attention'\] may only name embeddings, encoder, decoder"):
        tiny_config(tmp_path, train={"freeze": ["attention"], "init_from": "x.pt"})

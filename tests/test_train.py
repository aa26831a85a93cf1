"""Training: schedule, gradient accumulation, exact resumption, learning the demo task."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import yaml

from mtrain.data.batching import collate
from mtrain.data.prepare import prepare
from mtrain.distributed import DistInfo
from mtrain.errors import MtrainError
from mtrain.model.loss import label_smoothed_loss
from mtrain.run import checkpoint
from mtrain.training.progress import check_loss_scale
from mtrain.training.schedule import cooldown_factor, learning_rate
from mtrain.training.session import train
from mtrain.training.trainer import Trainer

from helpers import run_cli, tiny_config, train_until_sigterm, two_corpora


def test_learning_rate_follows_the_paper_formula():
    d, warmup = 512, 4000
    for step in (1, 100, 3999, 4000, 4001, 10000, 100000):
        expected = d**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert learning_rate(step, d, warmup) == pytest.approx(expected)
    assert learning_rate(4000, d, warmup) == pytest.approx(512**-0.5 * 4000**-0.5)  # the peak
    assert learning_rate(100, d, warmup, scale=2.0) == pytest.approx(2 * learning_rate(100, d, warmup))


def test_the_eta_says_warming_up_until_the_pace_is_known(monkeypatch):
    """Start-up (data, first batches) is not extrapolated: no ETA for the first steps after the first."""
    from mtrain.training import progress

    clock = iter([100.0, 110.0])
    monkeypatch.setattr(progress.time, "time", lambda: next(clock))
    eta = progress.EtaClock()
    assert [eta.seconds(step, 105) for step in (1, 2, 5)] == [None, None, None]
    assert eta.seconds(6, 105) == pytest.approx(10 / 5 * 99)  # 10 s for the 5 steps after the first


def test_train_lr_is_the_peak_at_the_end_of_warmup():
    """train.lr: the paper's shape with that value at step = warmup, whatever the width."""
    for d in (64, 512):
        assert learning_rate(4000, d, 4000, peak=5e-5) == pytest.approx(5e-5)
        assert learning_rate(1000, d, 4000, peak=5e-5) == pytest.approx(5e-5 / 4)  # linear warmup
        assert learning_rate(16000, d, 4000, peak=5e-5) == pytest.approx(5e-5 / 2)  # inverse square root
    with pytest.raises(MtrainError, match="train.lr and train.lr_scale both set the learning rate; keep one"):
        tiny_config("x", train={"lr": 1e-4, "lr_scale": 2.0})
    with pytest.raises(MtrainError, match="train.lr must be >= 0 and below 1"):
        tiny_config("x", train={"lr": 3.0})


def test_cooldown_factor_is_one_then_falls_linearly_to_zero():
    assert [cooldown_factor(spent, 0.0) for spent in (0.0, 0.9, 1.0)] == [1.0, 1.0, 1.0]
    assert [cooldown_factor(spent, 0.2) for spent in (0.0, 0.8, 0.9, 1.0, 1.5)] == pytest.approx(
        [1.0, 1.0, 0.5, 0.0, 0.0]
    )


def test_cooldown_ends_the_step_budget_and_the_time_budget_alike(tmp_path, monkeypatch):
    """cooldown 0.5 of a 6-step budget: steps 1-4 take the paper's lr, steps 5 and 6 2/3 and 1/3 of
    it. A one-minute budget at 10 s per step (and max_steps far away) cools down on the same steps,
    to the same weights; cooldown 0 is the paper's schedule on every step."""
    monkeypatch.setattr(Trainer, "elapsed", lambda self: 10.0 * self.progress.step)
    lrs = lambda run: [m["lr"] for m in _metrics(tmp_path / run) if m["kind"] == "train"]
    paper = [learning_rate(step, 64, 4) for step in range(1, 7)]
    runs = {
        "paper": {"max_steps": 6},
        "steps": {"max_steps": 6, "cooldown": 0.5},
        "minutes": {"max_steps": 100, "max_minutes": 1.0, "cooldown": 0.5},
    }
    for run, overrides in runs.items():
        train(tiny_config(tmp_path / run, train={"log_every": 1, "valid_every": 0, **overrides}))
    assert lrs("paper") == pytest.approx(paper)
    assert lrs("steps") == pytest.approx([*paper[:4], paper[4] * 2 / 3, paper[5] / 3])
    assert lrs("minutes") == pytest.approx(lrs("steps"))
    a, b = (checkpoint.load(tmp_path / run / "checkpoint_6.pt")["model"] for run in ("steps", "minutes"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def make_trainer(config):
    return Trainer(config, prepare(config), torch.device("cpu"), DistInfo())


def test_update_freq_two_with_half_batches_equals_one_full_batch(tmp_path):
    """The gradient an optimizer step sees is the same however the step's sentences are split.
    (Gradients, not updated weights, are compared: Adam turns the rounding noise of gradients
    that are zero in exact arithmetic, like the key biases', into full-size steps.)"""
    config = tiny_config(tmp_path, train={"max_tokens": 2000, "warmup_steps": 2})
    full, accumulated = make_trainer(config), make_trainer(config)
    seen = {}
    for name, trainer in (("full", full), ("accumulated", accumulated)):
        trainer.wrap()
        trainer.optimizer.step = lambda name=name, trainer=trainer: seen.setdefault(name, []).append(
            [p.grad.clone() for p in trainer.model.parameters()]
        )
    split = full.data.split("train")
    for step in range(3):
        ids = full.batches.batches(1)[step]
        half = len(ids) // 2
        full.train_step([collate(split, ids, 128)])
        accumulated.train_step([collate(split, ids[:half], 128), collate(split, ids[half:], 128)])
    for grads_full, grads_accumulated in zip(seen["full"], seen["accumulated"]):
        for a, b in zip(grads_full, grads_accumulated):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_a_training_step_waits_for_the_device_once(tmp_path, monkeypatch):
    """Reading a tensor on the host (.item(), .tolist(), bool(), float()) makes the host wait for
    the device; a step of three micro-batches does it once (is the gradient finite?)."""
    trainer = make_trainer(tiny_config(tmp_path, train={"update_freq": 3}))
    trainer.wrap()
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):

        def counting(self, *args, _original=getattr(torch.Tensor, name), _name=name, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("mtrain"):
                reads.append(f"{_name} in {caller}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    micro_batches = trainer.batches.step(1, 0)
    assert len(micro_batches) == 3
    result = trainer.train_step(micro_batches)
    monkeypatch.undo()
    assert reads == ["__bool__ in mtrain.training.trainer"]
    assert result.finite and result.loss_sum.item() > 0


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _write_config(path, config_values):
    path.write_text(yaml.safe_dump(config_values))
    return path


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Two weighted corpora, one tagged, with augmentation and subword sampling: a resumed run
    still sees the same pairs, changed the same way, in the same segmentation."""
    corpora = two_corpora(tmp_path)
    corpora[1]["augment"] = {"lower": 0.3}  # the tagged corpus's own
    values = {
        "out_dir": str(tmp_path / "a"),
        "data": {
            "train": corpora,
            "valid": {"demo": 50},
            "augment": {"upper": 0.1, "title": 0.1, "typos": 0.2, "strip_punct": 0.1},
        },
        "tokenizer": {"vocab_size": 150, "type": "unigram", "sampling_alpha": 0.2},
        "model": {
            "d_model": 32,
            "heads": 2,
            "encoder_layers": 1,
            "decoder_layers": 1,
            "d_ff": 64,
            "dropout": 0.1,
            "max_positions": 128,
        },
        "train": {
            "max_tokens": 400,
            "max_steps": 60,
            "warmup_steps": 10,
            "log_every": 1,
            "valid_every": 30,
            "save_every": 30,
        },
    }
    uninterrupted = _write_config(tmp_path / "a.yaml", values)
    interrupted = _write_config(tmp_path / "b.yaml", {**values, "out_dir": str(tmp_path / "b")})
    assert run_cli("train", "-c", str(uninterrupted)).returncode == 0

    status, stderr = train_until_sigterm(
        ["mtrain", "train", "-c", str(interrupted)], tmp_path / "b" / "metrics.jsonl", 5
    )
    assert status == 130, stderr
    assert "run the same command again to resume" in stderr
    stopped_at = checkpoint.load(tmp_path / "b" / "checkpoint_last.pt")["progress"]["step"]
    assert 5 <= stopped_at < 60

    resumed = run_cli("train", "-c", str(interrupted))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {tmp_path / 'b' / 'checkpoint_last.pt'} at step {stopped_at}" in resumed.stderr

    a, b = (
        checkpoint.load(tmp_path / "a" / "checkpoint_last.pt"),
        checkpoint.load(tmp_path / "b" / "checkpoint_last.pt"),
    )
    assert a["progress"] == b["progress"]
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-5, atol=1e-6)
    losses = lambda run: {m["step"]: m["loss"] for m in _metrics(tmp_path / run) if m["kind"] == "train"}
    la, lb = losses("a"), losses("b")
    assert la.keys() == lb.keys() == set(range(1, 61))
    np.testing.assert_allclose([la[s] for s in sorted(la)], [lb[s] for s in sorted(lb)], rtol=1e-5)


def test_max_minutes_stops_where_max_steps_would_and_a_larger_budget_resumes(tmp_path, monkeypatch, caplog):
    """A clock of 10 s per step: a one-minute budget is spent after step 6. The run saves and
    averages there, with the model a 6-step run gives; run again it is finished; 1.5 minutes resume it."""
    monkeypatch.setattr(Trainer, "elapsed", lambda self: 10.0 * self.progress.step)
    timed = {"max_steps": 100, "max_minutes": 1.0, "save_every": 4, "average_last": 2, "valid_every": 0}
    with caplog.at_level("INFO", logger="mtrain"):
        assert train(tiny_config(tmp_path / "timed", train=timed))["step"] == 6
    assert "time budget spent: max_minutes 1 reached at step 6" in caplog.text
    assert _metrics(tmp_path / "timed")[-1] == {**_metrics(tmp_path / "timed")[-1], "kind": "valid", "step": 6}
    assert sorted(p.name for p in (tmp_path / "timed").glob("checkpoint_[0-9]*.pt")) == [
        "checkpoint_4.pt",
        "checkpoint_6.pt",
    ]
    train(tiny_config(tmp_path / "steps", train={**timed, "max_steps": 6, "max_minutes": 0.0}))
    for name in ("checkpoint_6.pt", "checkpoint_avg.pt"):
        a, b = (checkpoint.load(tmp_path / run / name)["model"] for run in ("timed", "steps"))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    caplog.clear()
    with caplog.at_level("INFO", logger="mtrain"):
        assert train(tiny_config(tmp_path / "timed", train=timed))["step"] == 6
    assert "already finished at step 6: 0:01:00 of training reached max_minutes 1; raise train.max_minutes" in (
        caplog.text
    )
    assert train(tiny_config(tmp_path / "timed", train={**timed, "max_minutes": 1.5}))["step"] == 9


def test_non_finite_losses_stop_with_a_clear_error(tmp_path, monkeypatch):
    import mtrain.model.loss as loss_module

    monkeypatch.setattr(
        loss_module,
        "label_smoothed_loss",
        lambda logits, target, eps, **_: (logits.sum() * math.nan, logits.sum().detach()),
    )
    with pytest.raises(MtrainError, match="5 non-finite steps in a row"):
        train(tiny_config(tmp_path, train={"max_steps": 20}))


def test_fp16_overflow_steps_are_skipped_not_counted(tmp_path, monkeypatch, caplog):
    """fp16 (autocast and GradScaler work on CPU too): three overflowing steps are skipped as fairseq
    skips them: no step counted, no Adam update, nothing in the log window; the loss scale halves."""
    import mtrain.model.loss as loss_module
    import mtrain.training.trainer as train_module

    calls = []

    def overflowing_first_three(logits, target, eps, **kwargs):
        loss, nll = label_smoothed_loss(logits, target, eps, **kwargs)
        calls.append(1)
        return (loss * math.inf, nll) if len(calls) <= 3 else (loss, nll)

    monkeypatch.setattr(train_module, "resolve_precision", lambda device, precision: "fp16")
    monkeypatch.setattr(loss_module, "label_smoothed_loss", overflowing_first_three)
    with caplog.at_level("INFO", logger="mtrain"):
        assert train(tiny_config(tmp_path, train={"max_steps": 6, "log_every": 1}))["step"] == 6
    assert len(calls) == 9
    last = checkpoint.load(tmp_path / "checkpoint_last.pt")
    assert last["scaler"]["scale"] == 65536.0 / 8
    assert {float(s["step"]) for s in last["optimizer"]["state"].values()} == {6.0}  # six Adam updates
    records = [r for r in _metrics(tmp_path) if r["kind"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6] and all(math.isfinite(r["loss"]) for r in records)
    assert "step 1: fp16 gradient overflow; update skipped, loss scale lowered to 32768" in caplog.text


def test_fp16_gives_up_when_no_loss_scale_helps():
    check_loss_scale(2e-4, 40)
    with pytest.raises(MtrainError, match="fp16 loss scale fell to 5e-05 at step 41: the gradient is not finite"):
        check_loss_scale(5e-5, 41)


def test_checkpoints_are_complete_and_rotated(tmp_path):
    result = train(
        tiny_config(
            tmp_path, train={"max_steps": 12, "save_every": 3, "keep_last": 2, "average_last": 2, "valid_every": 6}
        )
    )
    assert result["step"] == 12 and set(result["valid"]) == {"loss", "nll", "ppl"}
    names = sorted(p.name for p in tmp_path.glob("checkpoint_*.pt"))
    assert names == [
        "checkpoint_12.pt",
        "checkpoint_9.pt",
        "checkpoint_avg.pt",
        "checkpoint_best.pt",
        "checkpoint_last.pt",
    ]
    state = checkpoint.load(tmp_path / "checkpoint_last.pt")
    assert {"model", "optimizer", "progress", "rng", "config", "spm"} <= set(state)
    assert state["spm"]["src"] == (tmp_path / "data" / "spm.model").read_bytes()
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "metrics.jsonl").is_file()
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


def test_the_demo_task_is_learned(demo_run):
    """The learning test: a tiny model masters held-out demo sentences (about 25 s on 2 cores)."""
    from mtrain.data.store import PreparedData
    from mtrain.evaluation.scores import corpus_scores
    from mtrain.inference.translator import open_translator

    data = PreparedData(demo_run / "data")
    translator = open_translator(demo_run / "checkpoint_avg.pt", "cpu")
    src, ref = data.raw_text("test", "en"), data.raw_text("test", "de")
    hyps = translator.translate(src)
    scores = corpus_scores(hyps, [ref])
    exact = sum(h == r for h, r in zip(hyps, ref)) / len(ref)
    assert scores["bleu"] >= 90, (scores["bleu"], exact)


def test_best_checkpoint_and_average_follow_validation_bleu_when_asked(tmp_path):
    """train.best_metric: bleu makes checkpoint_best.pt the best-BLEU one; average --best N takes
    the N best validated checkpoints, whatever their order."""
    config = tiny_config(
        tmp_path,
        train={
            "max_steps": 8,
            "save_every": 2,
            "valid_every": 2,
            "keep_last": 10,
            "valid_bleu": True,
            "best_metric": "bleu",
        },
    )
    train(config)
    valid = [m for m in _metrics(tmp_path) if m["kind"] == "valid"]
    assert [m["step"] for m in valid] == [2, 4, 6, 8]
    by_bleu = sorted(valid, key=lambda m: (-m["bleu"], m["step"]))
    best = checkpoint.load(tmp_path / "checkpoint_best.pt")
    assert best["valid"]["bleu"] == by_bleu[0]["bleu"]
    assert checkpoint.load(tmp_path / "checkpoint_8.pt")["valid"]["bleu"] == valid[-1]["bleu"]
    assert "valid" not in checkpoint.load(tmp_path / "checkpoint_avg.pt")

    result = run_cli("average", str(tmp_path), "--best", "2", "-o", str(tmp_path / "best2.pt"))
    assert result.returncode == 0, result.stderr
    chosen = [m["step"] for m in sorted(valid, key=lambda m: -m["bleu"])[:2]]
    for step in chosen:
        assert f"checkpoint_{step}.pt" in result.stdout
    by_loss = tiny_config(tmp_path / "loss", train={"max_steps": 4, "save_every": 2, "valid_every": 4})
    train(by_loss)
    refused = run_cli("average", str(tmp_path / "loss"), "--best", "2", "-o", str(tmp_path / "x.pt"))
    assert refused.returncode == 2
    assert refused.stderr.startswith(
        "error: --best 2: only 1 of the 2 numbered checkpoints were saved with a validation"
    )


@pytest.mark.parametrize(
    "train_section, message",
    [
        ({"best_metric": "bleu"}, "train.best_metric: bleu needs train.valid_bleu: true"),
        ({"best_metric": "chrf"}, "train.best_metric must be loss or bleu"),
    ],
)
def test_bad_best_metric_is_refused(tmp_path, train_section, message):
    with pytest.raises(MtrainError, match=message):
        tiny_config(tmp_path, train=train_section)

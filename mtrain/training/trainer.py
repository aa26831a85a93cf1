"""The training loop: label-smoothed cross entropy (model/loss.py), Adam with the inverse-square-root
warmup schedule (section 5.3; schedule.py), token-budget batches with gradient accumulation,
validation, checkpoints and exact resumption. session.py starts or resumes a run around it.

One optimizer step consumes `update_freq` micro-batches on each of `world_size` ranks. The loss
is summed over target tokens and divided by the number of target tokens in the *whole* step
(all micro-batches, all ranks), so the update does not depend on how a step is split.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mtrain import distributed
from mtrain.config import Config
from mtrain.data.augment import training_text
from mtrain.data.batching import Batch, Prefetcher, TrainBatches, eval_batches
from mtrain.data.multilingual import corpus_weights
from mtrain.data.store import PreparedData
from mtrain.data.tokenizer import Tokenizer
from mtrain.device import autocast_context, resolve_precision, restore_rng_state, rng_state
from mtrain.errors import Interrupted
from mtrain.inference.translator import Translator
from mtrain.model.loss import training_loss
from mtrain.model.transformer import Transformer
from mtrain.run import checkpoint
from mtrain.run.averaging import average_run
from mtrain.run.metrics import MetricsLog
from mtrain.training.initial import InitSource, freeze, student_weights
from mtrain.training.progress import (
    EtaClock,
    LogWindow,
    Progress,
    StepResult,
    clock,
    finished_message,
    log_run_start,
    log_train_line,
    log_valid_line,
    log_world_size_change,
    out_of_time,
    progress_bar,
    skip_non_finite,
    train_record,
)
from mtrain.training.schedule import adam, scheduled_lr
from mtrain.training.validation import over_directions, validation_bleu, validation_loss

log = logging.getLogger("mtrain")


@dataclass
class StartingPoint:
    """The checkpoint a run continues from."""

    path: Path
    state: dict


def training_batches(
    config: Config, data: PreparedData, tokenizer: Tokenizer, dist: distributed.DistInfo
) -> TrainBatches:
    """This rank's share of every step's batches: weighted corpora, augmentation, subword sampling, world size."""
    t = config.train
    batches = TrainBatches(
        data.split("train"),
        t.max_tokens,
        t.seed,
        config.model.max_positions,
        t.update_freq,
        dist.world_size,
        dist.rank,
        weights=corpus_weights(config.data, [c["pairs"] for c in data.corpora]),
        segmentation=training_text(config, data, tokenizer),
    )
    if batches.skipped:
        log.warning("%d training pairs are longer than model.max_positions and are skipped", batches.skipped)
    return batches


class Trainer:
    """One training run on one rank: the model, Adam, the batch schedule and the run's progress.

    Set-up is `Trainer(...)` then `start(starting_point)` (resume or begin; torch.compile and DDP
    come after the weights are loaded); `run()` trains to train.max_steps and saves; everything a
    resumed run needs to continue bit-exactly is in `state_dict()`."""

    def __init__(self, config: Config, data: PreparedData, device: torch.device, dist: distributed.DistInfo):
        self.config, self.data, self.device, self.dist = config, data, device, dist
        self.out_dir = Path(config.out_dir)
        self.tokenizer = data.tokenizer()
        t = config.train
        torch.manual_seed(t.seed)  # the same initial weights on every rank
        self.model = Transformer(config.model, self.tokenizer.src_vocab_size, self.tokenizer.tgt_vocab_size).to(device)
        freeze(self.model, t.freeze)
        self.guided = self.model.guided_attention(t.guided_alignment)  # None: no guided alignment
        self.init_from = None  # train.init_from's provenance (path, source_step, sha256), kept by resumed runs
        self.optimizer = adam(self.model, t, device)
        self.precision = resolve_precision(device, t.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.progress = Progress()
        self.batches = training_batches(config, data, self.tokenizer, dist)
        self.loader = Prefetcher(self.batches, pin=device.type == "cuda")
        self.valid = {name: data.split(name) for name in data.reference_splits("valid")}  # one per language pair
        self.module = self.model  # what runs forward/backward: maybe compiled, maybe DDP-wrapped
        self.metrics = MetricsLog(self.out_dir, enabled=dist.is_main)
        self.stop_signal = 0  # set by a signal handler: save and stop after this step
        self.elapsed_before = 0.0  # training wall-clock of earlier processes of this run (restored on resume)
        self.started = self.last_save = time.time()
        self.final_valid, self.validated_step = {}, -1  # the latest validation and its step
        self.window = LogWindow(started=self.started)  # sums since the last log line
        self.eta = EtaClock()
        self.first_step = self.saved_step = 0  # this process's first step; the last numbered checkpoint's
        self.bad_steps = 0  # non-finite steps in a row
        self.bar = tqdm(disable=True)  # the progress bar, opened by run() when stderr is a terminal

    def start(self, start: StartingPoint | None) -> None:
        """Continue from a checkpoint, or begin with the initial weights."""
        self.resume(start.state, start.path) if start is not None else self.wrap()

    def initialize(self, source: InitSource) -> None:
        """A new run from train.init_from's weights; everything else starts fresh."""
        self.model.load_state_dict(student_weights(source.state, self.config.model))
        self.init_from = source.provenance
        self.metrics.write({"kind": "init_from", "step": 0, **self.init_from})
        log.info("starting from the weights of %s (step %d, sha256 %s)", *self.init_from.values())

    def wrap(self) -> None:
        """torch.compile and DDP come after loading a checkpoint into the plain model."""
        torch.manual_seed(self.config.train.seed + 7919 * self.dist.rank + self.progress.step)
        if self.config.train.compile:
            self.module = torch.compile(self.module)
        if self.dist.enabled:
            self.module = DistributedDataParallel(
                self.module, device_ids=[self.device] if self.device.type == "cuda" else None
            )

    def resume(self, state: dict, path: Path) -> None:
        """Continue from a loaded checkpoint: weights, Adam, progress and random streams."""
        self.model.load_state_dict(state["model"])
        self.init_from = state.get("init_from")
        self.progress = Progress(**state["progress"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if checkpoint.is_weights_only(state):
            self.wrap()
            message = "%s holds weights only (an averaged checkpoint): continuing at step %d with a fresh Adam state"
            return log.info(message, path, self.progress.step)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        self.wrap()
        if len(rng) == self.dist.world_size:  # same world size: continue each rank's random stream exactly
            restore_rng_state(rng[self.dist.rank], self.device)
        log.info("resumed from %s at step %d (epoch %d)", path, self.progress.step, self.progress.epoch)
        if len(rng) != self.dist.world_size:
            log_world_size_change(len(rng), self.dist.world_size, self.config.train)

    def train_step(self, micro_batches: list[Batch]) -> StepResult:
        """Forward/backward every micro-batch, then one optimizer update.

        The host waits for the device once: to learn whether the gradient is finite."""
        t = self.config.train
        ntokens = sum(b.tgt_tokens for b in micro_batches)
        # Stops and timed saves (a collective) are decided in one collective: every rank acts alike, whatever its clock.
        elapsed, due = (
            self.elapsed(),
            t.save_every_minutes and time.time() - self.last_save >= 60 * t.save_every_minutes,
        )
        total_tokens, stop, late, elapsed_sum, timed = distributed.all_reduce_sum(
            [ntokens, float(self.stop_signal), float(out_of_time(t, elapsed)), elapsed, float(due)], self.device
        )
        if stop or late:
            return StepResult(stopped=bool(stop), out_of_time=bool(late))
        # DDP averages gradients over ranks; scaling by world size turns that into a sum.
        scale = self.dist.world_size / max(total_tokens, 1.0)
        result = StepResult(tokens=ntokens, timed_save=bool(timed))
        self.module.train()
        for i, batch in enumerate(micro_batches):
            batch = batch.to(self.device)
            sync = i == len(micro_batches) - 1 or not self.dist.enabled
            with nullcontext() if sync else self.module.no_sync(), autocast_context(self.device, self.precision):
                loss, nll = training_loss(self.module, batch, t, self.guided)
            self.scaler.scale(loss * scale).backward()
            result.loss_sum, result.nll_sum = result.loss_sum + loss.detach(), result.nll_sum + nll
        result.lr = scheduled_lr(t, self.config.model.d_model, self.progress.step, elapsed_sum / self.dist.world_size)
        for group in self.optimizer.param_groups:
            group["lr"] = result.lr
        self.scaler.unscale_(self.optimizer)
        result.grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), t.clip_norm if t.clip_norm > 0 else math.inf
        )
        result.finite = bool(torch.isfinite(result.grad_norm))  # the one host sync
        if result.finite:
            self.scaler.step(self.optimizer)
        self.scaler.update()  # fp16: a smaller loss scale after an overflow, a larger one after a calm stretch
        self.optimizer.zero_grad(set_to_none=True)
        return result

    def validate(self) -> dict:
        """Validation loss, NLL, perplexity (the same for any world size) and maybe BLEU; with several
        language pairs their means (which choose the best checkpoint) and each pair's."""
        return over_directions({name: self.validate_split(name) for name in self.valid})

    def validate_split(self, name: str) -> dict:
        """One validation split's loss, NLL, perplexity and (train.valid_bleu) greedy BLEU, decoded on rank 0."""
        t, rank, world = self.config.train, self.dist.rank, self.dist.world_size
        batches = eval_batches(self.valid[name], t.max_tokens, self.config.model.max_positions)[rank::world]
        result = validation_loss(self.model, batches, t.label_smoothing, self.device, self.precision)
        if t.valid_bleu:
            translator = Translator(self.model, self.tokenizer, self.config.decode, self.device, self.precision)
            result["bleu"] = validation_bleu(translator, self.data, name, self.dist.is_main)
        return result

    def validate_and_record(self) -> bool:
        """Validate, keep the best score, write the metrics record and the log line: a new best?"""
        t, p = self.config.train, self.progress
        self.final_valid = valid = self.validate()
        self.validated_step = p.step
        best = valid["bleu"] > p.best_valid_bleu if t.best_metric == "bleu" else valid["loss"] < p.best_valid_loss
        p.best_valid_loss = min(p.best_valid_loss, valid["loss"])
        p.best_valid_bleu = max(p.best_valid_bleu, valid.get("bleu", -math.inf))
        p.bad_validations = 0 if best else p.bad_validations + 1
        self.metrics.write({"kind": "valid", "step": p.step, "epoch": p.epoch, **valid, "elapsed_s": self.elapsed()})
        if self.dist.is_main:
            log_valid_line(p.step, valid, best)
        return best

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit-exactly (a collective: every rank takes part)."""
        return {
            "format": checkpoint.FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": vars(self.progress).copy(),
            "elapsed_s": self.elapsed(),
            "rng": distributed.all_gather_object(rng_state(self.device)),  # every rank's, for exact resumption
            "config": self.config.to_dict(),
            "spm": self.tokenizer.state(),
            "init_from": self.init_from,
            # this step's validation (for mtrain average --best), when there was one
            "valid": self.final_valid if self.validated_step == self.progress.step else None,
        }

    def save(self, numbered: bool = False, best: bool = False) -> None:
        """checkpoint_last.pt always; checkpoint_<step>.pt and checkpoint_best.pt when asked."""
        start = time.time()
        state = self.state_dict()
        if not self.dist.is_main:
            return
        step = self.progress.step
        names = [f"checkpoint_{step}.pt"] * numbered + ["checkpoint_best.pt"] * best + ["checkpoint_last.pt"]
        checkpoint.save_copies(state, self.out_dir, names, self.config.train.keep_last)
        log.info("saved %s at step %d in %.2f s", ", ".join(names), step, time.time() - start)

    def elapsed(self) -> float:
        """Training wall-clock of this run, earlier processes included."""
        return self.elapsed_before + time.time() - self.started

    def run(self) -> dict:
        """Train to train.max_steps (or max_epochs, max_minutes, or early stopping): step, log,
        validate, save."""
        t, p = self.config.train, self.progress
        finished = finished_message(p.step, t, self.elapsed())  # a finished run run again trains no more
        if finished:
            log.info(finished)
            return {"step": p.step, "epoch": p.epoch, "valid": {}}
        self.open_logs()
        try:
            while p.step < t.max_steps:
                micro_batches = self.next_micro_batches()
                if micro_batches is None:
                    break
                result = self.train_step(micro_batches)
                if result.stopped:
                    return self.stop_interrupted()
                if result.out_of_time:
                    log.info("time budget spent: max_minutes %g reached at step %d", t.max_minutes, p.step)
                    break
                p.epoch_step += 1
                if self.count_finite(result) and self.after_step(result):
                    break
        finally:
            self.loader.close()
        return self.finish()

    def after_step(self, result: StepResult) -> bool:
        """Count the step, then log, validate and save as due: whether to stop early."""
        t, p = self.config.train, self.progress
        p.step += 1
        self.bar.update(1)
        self.window.add(result)
        self.log_if_due(result.lr)
        best, stop_early = self.validate_if_due()
        self.save_if_due(best, stop_early, result.timed_save)
        if stop_early:
            log.info("early stop: no better validation %s in %d validations", t.best_metric, t.patience)
        return stop_early

    def open_logs(self) -> None:
        """The clocks, TensorBoard when installed, the progress bar, and the run's opening line."""
        t, p = self.config.train, self.progress
        self.started = self.last_save = self.window.started = time.time()
        self.first_step, self.saved_step, self.bad_steps, self.final_valid = p.step + 1, p.step, 0, {}
        self.metrics.open_tensorboard()
        self.bar = progress_bar(t.max_steps, p.step, enabled=self.dist.is_main)
        parameters = sum(x.numel() for x in self.model.parameters())
        log_run_start(parameters, self.device, self.precision, self.dist.world_size, t)

    def next_micro_batches(self) -> list[Batch] | None:
        """This rank's micro-batches of the next step; None when train.max_epochs is reached."""
        p = self.progress
        position = self.batches.next_position(p.epoch, p.epoch_step, self.config.train.max_epochs)
        if position is None:
            return None
        p.epoch, p.epoch_step = position
        return self.loader.step(p.epoch, p.epoch_step)

    def count_finite(self, result: StepResult) -> bool:
        """Skip a step whose loss or gradient is not finite: not counted, no learning-rate advance, kept
        out of the log; skip_non_finite says when training has diverged."""
        step, in_a_row = self.progress.step + 1, self.bad_steps + 1
        self.bad_steps = 0 if result.finite else skip_non_finite(in_a_row, step, self.scaler)
        return result.finite

    def log_if_due(self, lr: float) -> None:
        """A train record and log line every log_every steps (and after the first and last step)."""
        t, p, w = self.config.train, self.progress, self.window
        if not (p.step % t.log_every == 0 or p.step == t.max_steps or p.step == self.first_step):
            return
        loss_sum, nll_sum, grad_norm = w.read(self.device)
        sums = distributed.all_reduce_sum([loss_sum, nll_sum, w.tokens], self.device)
        speed = sums[2] / (time.time() - w.started)
        record = train_record(p, lr, sums, grad_norm / w.steps, speed, self.elapsed())
        self.metrics.write(record)
        if self.dist.is_main:
            log_train_line(record, t, self.eta.seconds(p.step, t.max_steps))
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{speed:.0f}", refresh=False)
        self.window = LogWindow(started=time.time())

    def validate_if_due(self) -> tuple[bool, bool]:
        """Validate every valid_every steps and at the end: (a new best?, stop early?)."""
        t, p = self.config.train, self.progress
        if not self.valid or not ((t.valid_every and p.step % t.valid_every == 0) or p.step >= t.max_steps):
            return False, False
        best = self.validate_and_record()
        return best, bool(t.patience) and p.bad_validations >= t.patience

    def save_if_due(self, best: bool, stop_early: bool, timed: bool) -> None:
        """Numbered checkpoints every save_every steps and at the end; checkpoint_last.pt when `timed`."""
        t, p = self.config.train, self.progress
        numbered = bool(t.save_every and p.step % t.save_every == 0) or p.step >= t.max_steps or stop_early
        if numbered or best or timed:
            self.save(numbered=numbered, best=best)
            self.last_save = time.time()
            self.saved_step = p.step if numbered else self.saved_step

    def stop_interrupted(self) -> dict:
        """Save where a signal stopped the run, then leave (the CLI exits with 130)."""
        self.bar.close()
        self.save()
        name = signal.Signals(self.stop_signal).name if self.stop_signal else "a signal to another rank"
        raise Interrupted(
            f"interrupted by {name} at step {self.progress.step}; saved {self.out_dir / 'checkpoint_last.pt'}; "
            "run the same command again to resume"
        )

    def finish(self) -> dict:
        """The last validation and numbered checkpoint (when max_epochs or max_minutes stopped
        between two saves), and checkpoint_avg.pt."""
        p = self.progress
        self.bar.close()
        if self.saved_step != p.step:
            best = bool(self.valid) and self.validated_step != p.step and self.validate_and_record()
            self.save(numbered=True, best=best)
        if self.dist.is_main:
            average_run(self.out_dir, self.config.train)
            log.info("training finished at step %d (epoch %d) in %s", p.step, p.epoch, clock(self.elapsed()))
        self.metrics.close()
        return {"step": p.step, "epoch": p.epoch, "valid": self.final_valid}

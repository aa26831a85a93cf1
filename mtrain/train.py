"""The training loop: label-smoothed cross entropy (loss.py), Adam with the inverse-square-root warmup
schedule (section 5.3) and an optional cooldown at the end of the budget, token-budget batches with
gradient accumulation, validation, checkpoints and exact resumption.

One optimizer step consumes `update_freq` micro-batches on each of `world_size` ranks. The loss
is summed over target tokens and divided by the number of target tokens in the *whole* step
(all micro-batches, all ranks), so the update does not depend on how a step is split.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mtrain import checkpoint, distributed, rundir
from mtrain.config import Config, save_config
from mtrain.data import PreparedData, prepare
from mtrain.data.batching import Batch, Prefetcher, TrainBatches, eval_batches
from mtrain.data.binarize import fingerprint, read_manifest
from mtrain.data.subword import SubwordSampler, require_unigram
from mtrain.device import autocast_context, keep_freed_memory, resolve_precision, select_device, set_threads
from mtrain.errors import Interrupted, MtrainError
from mtrain.files import atomic_copy, disk_errors, remove_stale_temporaries
from mtrain.loss import label_smoothed_loss
from mtrain.model import Transformer

log = logging.getLogger("mtrain")
MAX_BAD_STEPS = 5  # consecutive non-finite losses before giving up


def learning_rate(step: int, d_model: int, warmup: int, scale: float = 1.0) -> float:
    """lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step counted from 1."""
    step = max(step, 1)
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def cooldown_factor(budget_spent: float, cooldown: float) -> float:
    """What the learning rate is multiplied by once `budget_spent` (0 to 1) of the training budget is
    spent: 1, then falling linearly to 0 over the last `cooldown` fraction of the budget.

    The inverse-square-root schedule never comes down to small steps, which checkpoint averaging
    partly makes up for; a short linear cooldown at the end of a fixed budget ("warmup-stable-decay",
    Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations")
    lands the weights in the minimum instead. cooldown 0 leaves the paper's schedule untouched."""
    if cooldown <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - budget_spent) / cooldown))


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 1
    epoch_step: int = 0  # next step within the epoch
    best_valid_loss: float = math.inf
    best_valid_bleu: float = -math.inf
    bad_validations: int = 0  # in a row without a better train.best_metric


@dataclass
class StepResult:
    """What one optimizer step reports. The sums stay on the device: reading them would make the
    host wait for the step to finish, so they are read once per log line instead."""

    loss_sum: torch.Tensor | float = 0.0
    nll_sum: torch.Tensor | float = 0.0
    tokens: int = 0
    lr: float = 0.0
    grad_norm: torch.Tensor | float = 0.0
    finite: bool = True
    stopped: bool = False  # a signal asked this or another rank to stop
    out_of_time: bool = False  # train.max_minutes is spent on this or another rank


@dataclass
class LogWindow:
    """Sums over the steps since the last log line (device tensors until `read`)."""

    loss_sum: torch.Tensor | float = 0.0
    nll_sum: torch.Tensor | float = 0.0
    grad_norm: torch.Tensor | float = 0.0
    tokens: float = 0.0
    steps: int = 0
    started: float = 0.0

    def add(self, result: StepResult) -> None:
        self.loss_sum = self.loss_sum + result.loss_sum
        self.nll_sum = self.nll_sum + result.nll_sum
        self.grad_norm = self.grad_norm + result.grad_norm
        self.tokens += result.tokens
        self.steps += 1


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
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=0.0,
            betas=(t.adam_beta1, t.adam_beta2),
            eps=t.adam_eps,
            fused=device.type in ("cuda", "cpu"),  # one kernel for all parameters: 4x faster than the loop on CPU
        )
        self.precision = resolve_precision(device, t.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.progress = Progress()
        self.batches = TrainBatches(
            data.split("train"),
            t.max_tokens,
            t.seed,
            config.model.max_positions,
            t.update_freq,
            dist.world_size,
            dist.rank,
            weights=[c.weight for c in config.data.train],
            segmentation=self.subword_sampler(data),
        )
        if self.batches.skipped:
            log.warning("%d training pairs are longer than model.max_positions and are skipped", self.batches.skipped)
        self.loader = Prefetcher(self.batches, pin=device.type == "cuda")
        self.valid = data.split("valid") if data.has("valid") else None
        self.module = self.model  # what runs forward/backward: maybe compiled, maybe DDP-wrapped
        self.metrics_file = self.out_dir / rundir.METRICS_FILE
        self.tensorboard = None
        self.stop_signal = 0
        self.elapsed_before = 0.0  # training wall-clock of earlier processes of this run (restored on resume)
        self.final_valid, self.validated_step = {}, -1  # the latest validation and its step
        self.started = time.time()

    # ---------------------------------------------------------------- set-up

    def subword_sampler(self, data: PreparedData) -> SubwordSampler | None:
        """Subword regularization (tokenizer.sampling_alpha > 0): each epoch's segmentation."""
        alpha = self.config.tokenizer.sampling_alpha
        if not alpha:
            return None
        for processor in (self.tokenizer.src, self.tokenizer.tgt):
            require_unigram(processor)
        tag_ids = [c["tag_id"] for c in data.corpora]
        return SubwordSampler(
            data.split("train"), self.tokenizer.src, self.tokenizer.tgt, tag_ids, alpha, self.config.train.seed
        )

    def start(self, start: StartingPoint | None) -> None:
        """Continue from a checkpoint, or begin with the initial weights."""
        if start is not None:
            self.resume(start.state, start.path)
        else:
            self.wrap()

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
        self.progress = Progress(**state["progress"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        if checkpoint.is_weights_only(state):
            self.wrap()
            log.info(
                "%s holds weights only (an averaged checkpoint): training continues from its weights at step %d "
                "with a fresh Adam state",
                path,
                self.progress.step,
            )
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        self.wrap()
        if len(rng) == self.dist.world_size:  # same world size: continue each rank's random stream exactly
            torch.set_rng_state(rng[self.dist.rank]["cpu"])
            if self.device.type == "cuda" and rng[self.dist.rank]["cuda"] is not None:
                torch.cuda.set_rng_state(rng[self.dist.rank]["cuda"], self.device)
        log.info("resumed from %s at step %d (epoch %d)", path, self.progress.step, self.progress.epoch)
        if len(rng) != self.dist.world_size:
            t = self.config.train
            log.info(
                "the run was trained on %d process(es) and continues on %d: a step now takes %d micro-batches of "
                "<= %d tokens instead of %d (the same batches in the same order, dealt to more or fewer ranks; "
                "dropout's random streams start afresh)",
                len(rng),
                self.dist.world_size,
                self.dist.world_size * t.update_freq,
                t.max_tokens,
                len(rng) * t.update_freq,
            )

    # ---------------------------------------------------------------- one step

    def train_step(self, micro_batches: list[Batch]) -> StepResult:
        """Forward/backward every micro-batch, then one optimizer update.

        The host waits for the device once: to learn whether the gradient is finite."""
        t = self.config.train
        ntokens = sum(b.tgt_tokens for b in micro_batches)
        # Stopping is decided together: every rank learns in the same collective whether any rank
        # was signalled or ran out of time, so all of them stop before the same step.
        elapsed = self.elapsed()
        total_tokens, stop, out_of_time, elapsed_sum = distributed.all_reduce_sum(
            [ntokens, float(self.stop_signal), float(self.out_of_time(elapsed)), elapsed], self.device
        )
        if stop or out_of_time:
            return StepResult(stopped=bool(stop), out_of_time=bool(out_of_time))
        # DDP averages gradients over ranks; scaling by world size turns that into a sum.
        scale = self.dist.world_size / max(total_tokens, 1.0)
        result = StepResult(tokens=ntokens)
        self.module.train()
        for i, batch in enumerate(micro_batches):
            batch = batch.to(self.device)
            sync = i == len(micro_batches) - 1 or not self.dist.enabled
            with nullcontext() if sync else self.module.no_sync(), autocast_context(self.device, self.precision):
                logits = self.module(batch.src, batch.tgt_in)
                loss, nll = label_smoothed_loss(logits, batch.tgt_out, t.label_smoothing, overwrite_logits=True)
            self.scaler.scale(loss * scale).backward()
            result.loss_sum, result.nll_sum = result.loss_sum + loss.detach(), result.nll_sum + nll
        result.lr = self.scheduled_lr(elapsed_sum / self.dist.world_size)
        for group in self.optimizer.param_groups:
            group["lr"] = result.lr
        self.scaler.unscale_(self.optimizer)
        result.grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), t.clip_norm if t.clip_norm > 0 else math.inf
        )
        result.finite = self.precision == "fp16" or bool(torch.isfinite(result.grad_norm))  # the one host sync
        if result.finite:  # the fp16 scaler skips non-finite steps itself
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return result

    def scheduled_lr(self, elapsed_s: float) -> float:
        """The next step's learning rate: the paper's schedule (section 5.3, equation 3) times the
        cooldown factor. `elapsed_s` is the ranks' mean clock, so that every rank takes the same lr."""
        t, step = self.config.train, self.progress.step
        lr = learning_rate(step + 1, self.config.model.d_model, t.warmup_steps, t.lr_scale)
        budget_spent = step / t.max_steps
        if t.max_minutes:
            budget_spent = max(budget_spent, elapsed_s / (60 * t.max_minutes))
        return lr * cooldown_factor(budget_spent, t.cooldown)

    # ---------------------------------------------------------------- validation

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation loss, NLL and perplexity per target token; identical for any world size."""
        self.model.eval()
        t = self.config.train
        batches = eval_batches(self.valid, t.max_tokens, self.config.model.max_positions)
        loss_sum = nll_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = 0
        for batch in batches[self.dist.rank :: self.dist.world_size]:
            batch = batch.to(self.device)
            with autocast_context(self.device, self.precision):
                logits = self.model(batch.src, batch.tgt_in)
            loss, nll = label_smoothed_loss(logits, batch.tgt_out, t.label_smoothing)
            loss_sum, nll_sum, tokens = loss_sum + loss, nll_sum + nll, tokens + batch.tgt_tokens
        loss_sum, nll_sum, tokens = distributed.all_reduce_sum([loss_sum.item(), nll_sum.item(), tokens], self.device)
        result = {"loss": loss_sum / tokens, "nll": nll_sum / tokens, "ppl": math.exp(min(nll_sum / tokens, 50))}
        if t.valid_bleu:
            result["bleu"] = self.valid_bleu()
        return result

    def valid_bleu(self) -> float:
        """Greedy-decode the validation sources (on rank 0) and score them with sacreBLEU."""
        from mtrain.decode import Translator
        from mtrain.evaluate import corpus_scores

        score = None
        if self.dist.is_main:
            translator = Translator(self.model, self.tokenizer, self.config.decode, self.device, self.precision)
            hyps = translator.translate(self.data.raw_text("valid", self.data.src_lang), beam=1)
            score = corpus_scores(hyps, [self.data.raw_text("valid", self.data.tgt_lang)])["bleu"]
        return distributed.broadcast_object(score)

    # ---------------------------------------------------------------- checkpoints and logs

    def state_dict(self) -> dict:
        rng = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        return {
            "format": checkpoint.FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": vars(self.progress).copy(),
            "elapsed_s": self.elapsed(),
            "rng": distributed.all_gather_object(rng),  # every rank's stream, for exact resumption
            "config": self.config.to_dict(),
            "spm": {"src": self.tokenizer.src_model, "tgt": self.tokenizer.tgt_model},
            # this step's validation (for mtrain average --best), when there was one
            "valid": self.final_valid if self.validated_step == self.progress.step else None,
        }

    def out_of_time(self, elapsed: float) -> bool:
        """Whether train.max_minutes of training wall-clock (`elapsed`, earlier processes of the run
        included) is spent."""
        max_minutes = self.config.train.max_minutes
        return max_minutes > 0 and elapsed >= 60 * max_minutes

    def elapsed(self) -> float:
        """Training wall-clock of this run, earlier processes included."""
        return self.elapsed_before + time.time() - self.started

    def save(self, numbered: bool = False, best: bool = False) -> None:
        """checkpoint_last.pt always; checkpoint_<step>.pt and checkpoint_best.pt when asked.

        Each is a file of its own (damage to one cannot reach another), and checkpoint_last.pt is
        written last: a process killed in between resumes from the previous checkpoint_last.pt
        and writes the numbered one again, so the numbered checkpoints have no gaps."""
        start = time.time()
        state = self.state_dict()  # a collective: every rank takes part
        if not self.dist.is_main:
            return
        names = (
            [f"checkpoint_{self.progress.step}.pt"] * numbered + ["checkpoint_best.pt"] * best + ["checkpoint_last.pt"]
        )
        first = self.out_dir / names[0]
        with disk_errors(
            f"saving {first}",
            "the checkpoints saved before are intact; free space and run the same command again to resume",
        ):
            checkpoint.save(state, first)
            for name in names[1:]:
                atomic_copy(first, self.out_dir / name)
            for old in checkpoint.numbered(self.out_dir)[: -self.config.train.keep_last]:
                old.unlink(missing_ok=True)
        log.info("saved %s at step %d in %.2f s", ", ".join(names), self.progress.step, time.time() - start)

    def write_metrics(self, record: dict) -> None:
        """One JSON line per record, with the wall-clock time (UTC) it was written."""
        if not self.dist.is_main:
            return
        record = {**record, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        rundir.append_record(self.metrics_file, record)
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def open_logs(self) -> None:
        """TensorBoard when installed (and saying so), and the run's opening line."""
        t = self.config.train
        if self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(self.out_dir / "tensorboard")
                log.info("TensorBoard logging on: tensorboard --logdir %s", self.out_dir / "tensorboard")
            except ImportError:
                log.info(
                    "TensorBoard logging off (pip install tensorboard to turn it on); metrics go to %s",
                    self.metrics_file,
                )
        n_params = sum(x.numel() for x in self.model.parameters())
        log.info(
            "model: %.1fM parameters; device %s, %s, %d CPU thread(s) per process, world size %d, "
            "%d micro-batch(es) of <=%d tokens per rank and step",
            n_params / 1e6,
            self.device,
            self.precision,
            torch.get_num_threads(),
            self.dist.world_size,
            t.update_freq,
            t.max_tokens,
        )

    # ---------------------------------------------------------------- the loop

    def run(self) -> dict:
        """Train to train.max_steps (or max_epochs, max_minutes, or early stopping): step, log,
        validate, save."""
        t, p = self.config.train, self.progress
        if self.already_finished():
            return {"step": p.step, "epoch": p.epoch, "valid": {}}
        self.open_logs()
        self.window = LogWindow(started=time.time())
        self.started = self.last_save = time.time()
        self.first_step, self.saved_step, self.bad_steps, self.final_valid = p.step + 1, p.step, 0, {}
        self.bar = tqdm(
            total=t.max_steps,
            initial=p.step,
            unit="step",
            desc="training",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not (self.dist.is_main and sys.stderr.isatty()),
        )
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
                if not self.count_finite(result):
                    continue
                p.step += 1
                self.bar.update(1)
                self.window.add(result)
                self.log_if_due(result.lr)
                best, stop_early = self.validate_if_due()
                self.save_if_due(best, stop_early)
                if stop_early:
                    log.info("early stop: no better validation %s in %d validations", t.best_metric, t.patience)
                    break
        finally:
            self.loader.close()
        return self.finish()

    def already_finished(self) -> bool:
        """A finished run run again (max_steps reached, or max_minutes spent) says so and trains no more."""
        t, p = self.config.train, self.progress
        if p.step >= t.max_steps:
            log.info(
                "already finished at step %d (max_steps %d); raise train.max_steps to continue", p.step, t.max_steps
            )
            return True
        if self.out_of_time(self.elapsed()):
            log.info(
                "already finished at step %d: %s of training reached max_minutes %g; raise train.max_minutes to "
                "continue",
                p.step,
                _clock(self.elapsed()),
                t.max_minutes,
            )
            return True
        return False

    def next_micro_batches(self) -> list[Batch] | None:
        """This rank's micro-batches of the next step, moving to the next epoch when one ends;
        None when train.max_epochs is reached."""
        t, p = self.config.train, self.progress
        while p.epoch_step >= self.batches.steps_in_epoch(p.epoch):
            if self.batches.steps_in_epoch(p.epoch) == 0:
                raise MtrainError(
                    "the training data gives no complete step: fewer than world_size x update_freq = "
                    f"{self.dist.world_size * t.update_freq} batches per epoch; lower train.max_tokens or "
                    "train.update_freq"
                )
            if t.max_epochs and p.epoch >= t.max_epochs:
                return None
            p.epoch, p.epoch_step = p.epoch + 1, 0
        return self.loader.step(p.epoch, p.epoch_step)

    def count_finite(self, result: StepResult) -> bool:
        """Skip a step whose loss or gradient is not finite; give up after MAX_BAD_STEPS in a row."""
        if result.finite:
            self.bad_steps = 0
            return True
        self.bad_steps += 1
        step = self.progress.step + 1
        log.warning("step %d: loss or gradient is not finite; update skipped (%d in a row)", step, self.bad_steps)
        if self.bad_steps >= MAX_BAD_STEPS:
            raise MtrainError(
                f"{self.bad_steps} non-finite steps in a row at step {step}: training diverged; lower train.lr_scale, "
                "set train.clip_norm, or use fp32/bf16"
            )
        return False

    def log_if_due(self, lr: float) -> None:
        """A train record and log line every log_every steps (and after the first and last step)."""
        t, p, w = self.config.train, self.progress, self.window
        if not (p.step % t.log_every == 0 or p.step == t.max_steps or p.step == self.first_step):
            return
        sums = torch.stack(
            [torch.as_tensor(x, dtype=torch.float64, device=self.device) for x in (w.loss_sum, w.nll_sum, w.grad_norm)]
        )
        loss_sum, nll_sum, grad_norm = sums.tolist()
        loss_sum, nll_sum, tokens = distributed.all_reduce_sum([loss_sum, nll_sum, w.tokens], self.device)
        record = {
            "kind": "train",
            "step": p.step,
            "epoch": p.epoch,
            "lr": lr,
            "loss": loss_sum / tokens,
            "nll": nll_sum / tokens,
            "ppl": math.exp(min(nll_sum / tokens, 50)),
            "tgt_tokens_per_s": tokens / (time.time() - w.started),
            "grad_norm": grad_norm / w.steps,
            "elapsed_s": self.elapsed(),
        }
        self.write_metrics(record)
        if self.dist.is_main:
            eta = (time.time() - self.started) / (p.step - self.first_step + 1) * (t.max_steps - p.step)
            if t.max_minutes:
                eta = max(0.0, min(eta, 60 * t.max_minutes - record["elapsed_s"]))
            log.info(
                "step %d/%d (%.1f%%) | epoch %d | lr %.2e | loss %.3f | nll %.3f | ppl %.2f | %.0f tgt tok/s | gnorm "
                "%.2f | "
                "%s elapsed | ETA %s",
                p.step,
                t.max_steps,
                100 * p.step / t.max_steps,
                p.epoch,
                lr,
                record["loss"],
                record["nll"],
                record["ppl"],
                record["tgt_tokens_per_s"],
                record["grad_norm"],
                _clock(record["elapsed_s"]),
                _clock(eta),
            )
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tgt_tokens_per_s']:.0f}", refresh=False)
        self.window = LogWindow(started=time.time())

    def validate_if_due(self) -> tuple[bool, bool]:
        """Validate every valid_every steps and at the end: (a new best?, stop early?)."""
        t, p = self.config.train, self.progress
        if self.valid is None or not ((t.valid_every and p.step % t.valid_every == 0) or p.step >= t.max_steps):
            return False, False
        best = self.validate_and_record()
        return best, bool(t.patience) and p.bad_validations >= t.patience

    def validate_and_record(self) -> bool:
        """Validate, keep the best score, write the metrics record and the log line: a new best?"""
        t, p = self.config.train, self.progress
        self.final_valid = valid = self.validate()
        self.validated_step = p.step
        if t.best_metric == "bleu":
            best = valid["bleu"] > p.best_valid_bleu
        else:
            best = valid["loss"] < p.best_valid_loss
        p.best_valid_loss = min(p.best_valid_loss, valid["loss"])
        p.best_valid_bleu = max(p.best_valid_bleu, valid.get("bleu", -math.inf))
        p.bad_validations = 0 if best else p.bad_validations + 1
        self.write_metrics({"kind": "valid", "step": p.step, "epoch": p.epoch, **valid, "elapsed_s": self.elapsed()})
        if self.dist.is_main:
            bleu = f" | bleu {valid['bleu']:.2f}" if "bleu" in valid else ""
            log.info(
                "valid step %d | loss %.3f | nll %.3f | ppl %.2f%s%s",
                p.step,
                valid["loss"],
                valid["nll"],
                valid["ppl"],
                bleu,
                " | best" if best else "",
            )
        return best

    def save_if_due(self, best: bool, stop_early: bool) -> None:
        """Numbered checkpoints every save_every steps and at the end; checkpoint_last.pt also
        every save_every_minutes."""
        t, p = self.config.train, self.progress
        numbered = bool(t.save_every and p.step % t.save_every == 0) or p.step >= t.max_steps or stop_early
        timed = bool(t.save_every_minutes) and time.time() - self.last_save >= 60 * t.save_every_minutes
        if numbered or best or timed:
            self.save(numbered=numbered, best=best)
            self.last_save = time.time()
            self.saved_step = p.step if numbered else self.saved_step

    def stop_interrupted(self):
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
            best = self.valid is not None and self.validated_step != p.step and self.validate_and_record()
            self.save(numbered=True, best=best)
        if self.dist.is_main:
            self.write_average()
            log.info("training finished at step %d (epoch %d) in %s", p.step, p.epoch, _clock(self.elapsed()))
        if self.tensorboard is not None:
            self.tensorboard.close()
        return {"step": p.step, "epoch": p.epoch, "valid": self.final_valid}

    def write_average(self) -> None:
        """checkpoint_avg.pt: the mean of the last average_last numbered checkpoints, unless
        scheduled ones are missing."""
        done = checkpoint.numbered(self.out_dir)[-self.config.train.average_last :]
        if not done:
            return
        missing = checkpoint.missing_steps(done, self.config.train.save_every)
        if missing:
            log.warning(
                "checkpoint_avg.pt not written: the numbered checkpoints lack steps %s; average what is there with "
                "mtrain average %s --last %d --allow-gaps -o %s",
                ", ".join(map(str, missing)),
                self.out_dir,
                len(done),
                self.out_dir / "checkpoint_avg.pt",
            )
            return
        with disk_errors(
            f"saving {self.out_dir / 'checkpoint_avg.pt'}",
            "the other checkpoints are intact; free space and run mtrain average",
        ):
            checkpoint.save(checkpoint.average(done), self.out_dir / "checkpoint_avg.pt")
        log.info("checkpoint_avg.pt averages %d checkpoint(s): %s", len(done), ", ".join(x.name for x in done))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class StartingPoint:
    """The checkpoint a run continues from."""

    path: Path
    state: dict


def train(
    config: Config,
    resume: str | None = None,
    restart: bool = False,
    recover: bool = False,
    allow_config_change: bool = False,
) -> dict:
    """Lock the run directory, check what is resumed against the config, prepare data (once),
    train; returns the final step and validation."""
    dist = distributed.from_env()
    device = select_device(config.train.device, dist.local_rank)
    set_threads(config.train.threads)
    if device.type == "cpu":
        keep_freed_memory()
    with rundir.RunLock(Path(config.out_dir)) if dist.is_main else nullcontext():
        start = starting_point(config, resume, recover) if resume or not restart else None
        changes = check_resumable(start, config, allow_config_change) if start else {}
        # Data is prepared before the process group exists: on a big corpus it takes longer than any
        # sensible collective timeout. Rank 0 prepares, the others wait for its manifest.
        if dist.is_main:
            set_up_run_dir(config, start, restart)
        else:
            wait_for_prepared(config)
        distributed.init(dist, device, config.train.dist_timeout_minutes)
        try:
            trainer = Trainer(config, PreparedData(config.data_dir), device, dist)
            trainer.start(start)
            if changes:
                trainer.write_metrics(
                    {
                        "kind": "config_change",
                        "step": trainer.progress.step,
                        "changes": {k: list(v) for k, v in changes.items()},
                    }
                )
            with stop_on_signals(trainer):
                return trainer.run()
        finally:
            distributed.shutdown()


def starting_point(config: Config, resume: str | None, recover: bool) -> StartingPoint | None:
    """--resume's checkpoint, else the run's checkpoint_last.pt, else None (a new run). A damaged
    checkpoint_last.pt is named with the newest readable numbered one, taken with --recover."""
    if resume:
        return StartingPoint(Path(resume), checkpoint.load(resume))
    out_dir = Path(config.out_dir)
    last = out_dir / "checkpoint_last.pt"
    if not last.exists():
        return None
    try:
        return StartingPoint(last, checkpoint.load(last))
    except MtrainError:
        fallback = checkpoint.newest_readable(checkpoint.numbered(out_dir))
        if fallback is None:
            raise MtrainError(
                f"{last} is unreadable (damaged or truncated) and no numbered checkpoint in {out_dir} is readable; "
                "start over with --restart"
            ) from None
        path, state = fallback
        if not recover:
            raise MtrainError(
                f"{last} is unreadable (damaged or truncated); the newest readable checkpoint is {path.name} "
                f"(step {state['progress']['step']}): run again with --recover to continue from it, or --restart to "
                "start over"
            ) from None
    log.warning(
        "%s is unreadable; continuing from %s (step %d) as --recover asks", last, path, state["progress"]["step"]
    )
    return StartingPoint(path, state)


def check_resumable(start: StartingPoint, config: Config, allow_config_change: bool) -> dict:
    """Refuse another model shape; refuse other training settings than the checkpoint's unless
    allowed (returns those, to record); settings of how long and how often may change freely."""
    checkpoint.check_shape(start.state, config, start.path)
    allowed, refused = rundir.split_changes(rundir.config_changes(start.state["config"], config.to_dict()))
    if allowed:
        log.info("continuing with changed settings: %s", rundir.describe_changes(allowed))
    if refused and not allow_config_change:
        raise MtrainError(
            f"the config differs from the one {start.path} was trained with: {rundir.describe_changes(refused)}; "
            "resume with the run's settings, pass --allow-config-change to continue with the new ones "
            "(recorded in metrics.jsonl), or use --restart / a new out_dir"
        )
    if refused:
        log.warning(
            "continuing with changed training settings (--allow-config-change): %s", rundir.describe_changes(refused)
        )
    return refused


def set_up_run_dir(config: Config, start: StartingPoint | None, restart: bool) -> None:
    """Rank 0, under the run's lock: clear leftovers (and, with --restart, the old outputs), prepare
    data, cut metrics back to the resumed step, then (only now) write config.yaml."""
    out_dir = Path(config.out_dir)
    removed = remove_stale_temporaries(out_dir) + remove_stale_temporaries(
        config.data_dir.parent, prefix=config.data_dir.name
    )
    if removed:
        log.info(
            "removed %d temporary file(s) left by killed runs: %s", len(removed), ", ".join(p.name for p in removed)
        )
    if restart:
        rundir.clear_outputs(out_dir, checkpoint.numbered(out_dir))
    prepare(config, expected_spm=start.state["spm"] if start else None)
    # records past the resumed step (all of them when a run died before its first checkpoint) go aside
    rundir.repair_metrics(out_dir, int(start.state["progress"]["step"]) if start else 0)
    if start:
        restore_scheduled(config, start)
    with disk_errors(f"writing {out_dir / 'config.yaml'}"):
        save_config(config, out_dir / "config.yaml")


def restore_scheduled(config: Config, start: StartingPoint) -> None:
    """A run killed while saving (by an earlier mtrain, which wrote checkpoint_last.pt first) may
    miss the numbered checkpoint of the step it resumes from: write it from checkpoint_last.pt."""
    step, save_every = int(start.state["progress"]["step"]), config.train.save_every
    numbered = Path(config.out_dir) / f"checkpoint_{step}.pt"
    if (
        start.path.name == "checkpoint_last.pt"
        and save_every
        and step
        and step % save_every == 0
        and not numbered.exists()
    ):
        atomic_copy(start.path, numbered)
        log.info("restored the missing scheduled %s from checkpoint_last.pt", numbered.name)


@contextmanager
def stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to save and stop at the end of the current step."""
    previous = {
        sig: signal.signal(sig, lambda signum, frame: setattr(trainer, "stop_signal", signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_prepared(config: Config, poll_seconds: float = 2.0) -> None:
    """Block until rank 0 has written prepared data matching this config and its inputs."""
    wanted = fingerprint(config)
    while (read_manifest(config.data_dir) or {}).get("fingerprint") != wanted:
        time.sleep(poll_seconds)

"""Where training stands and what it reports: the progress saved in every checkpoint, one
step's result, the sums behind a log line, and the log line itself."""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from mtrain.config import TrainConfig
from mtrain.errors import MtrainError

log = logging.getLogger("mtrain")


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
    timed_save: bool = False  # train.save_every_minutes is due on this or another rank


@dataclass
class LogWindow:
    """Sums over the steps since the last log line (device tensors until `record` reads them)."""

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

    def read(self, device: torch.device) -> tuple[float, float, float]:
        """The loss, NLL and gradient-norm sums, read from the device at once (one wait)."""
        sums = [
            torch.as_tensor(x, dtype=torch.float64, device=device)
            for x in (self.loss_sum, self.nll_sum, self.grad_norm)
        ]
        loss_sum, nll_sum, grad_norm = torch.stack(sums).tolist()
        return loss_sum, nll_sum, grad_norm


def train_record(
    progress: Progress,
    lr: float,
    sums: tuple[float, float, float],
    grad_norm: float,
    tokens_per_s: float,
    elapsed_s: float,
) -> dict:
    """The `kind: train` record of metrics.jsonl from the loss, NLL and token sums of all ranks."""
    loss_sum, nll_sum, tokens = sums
    return {
        "kind": "train",
        "step": progress.step,
        "epoch": progress.epoch,
        "lr": lr,
        "loss": loss_sum / tokens,
        "nll": nll_sum / tokens,
        "ppl": math.exp(min(nll_sum / tokens, 50)),
        "tgt_tokens_per_s": tokens_per_s,
        "grad_norm": grad_norm,
        "elapsed_s": elapsed_s,
    }


ETA_STEPS = 5  # steps after the first before the log line estimates the time left


class EtaClock:
    """Time left to max_steps at the pace since the first step it is asked about (the first log
    line, after this process's first step); None ("warming up") until ETA_STEPS more steps have
    passed, so that start-up does not read as a run of hours."""

    def __init__(self) -> None:
        self.origin: tuple[float, int] | None = None

    def seconds(self, step: int, max_steps: int) -> float | None:
        self.origin = self.origin or (time.time(), step)
        origin_time, origin_step = self.origin
        if step - origin_step < ETA_STEPS:
            return None
        return (time.time() - origin_time) / (step - origin_step) * (max_steps - step)


def log_train_line(record: dict, train: TrainConfig, eta_s: float | None) -> None:
    """The log line of a train record: step of max, loss, speed, elapsed time and ETA (None: still
    warming up, too early to tell)."""
    if train.max_minutes and eta_s is not None:
        eta_s = max(0.0, min(eta_s, 60 * train.max_minutes - record["elapsed_s"]))
    log.info(
        "step %d/%d (%.1f%%) | epoch %d | lr %.2e | loss %.3f | nll %.3f | ppl %.2f | %.0f tgt tok/s | gnorm %.2f | "
        "%s elapsed | ETA %s",
        record["step"],
        train.max_steps,
        100 * record["step"] / train.max_steps,
        record["epoch"],
        record["lr"],
        record["loss"],
        record["nll"],
        record["ppl"],
        record["tgt_tokens_per_s"],
        record["grad_norm"],
        clock(record["elapsed_s"]),
        "warming up" if eta_s is None else clock(eta_s),
    )


def log_valid_line(step: int, valid: dict, best: bool) -> None:
    """The validation line; with several language pairs, the means and then each pair's loss and BLEU."""
    bleu = f" | bleu {valid['bleu']:.2f}" if "bleu" in valid else ""
    pairs = "".join(
        f" | {name} {r['loss']:.3f}" + (f" {r['bleu']:.2f}" if "bleu" in r else "")
        for name, r in valid.get("directions", {}).items()
    )
    log.info(
        "valid step %d | loss %.3f | nll %.3f | ppl %.2f%s%s%s",
        step,
        valid["loss"],
        valid["nll"],
        valid["ppl"],
        bleu,
        pairs,
        " | best" if best else "",
    )


def clock(seconds: float) -> str:
    """H:MM:SS."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_bar(max_steps: int, step: int, enabled: bool) -> tqdm:
    """A progress bar on stderr when it is a terminal (and this is the main rank)."""
    return tqdm(
        total=max_steps,
        initial=step,
        unit="step",
        desc="training",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=not (enabled and sys.stderr.isatty()),
    )


def log_run_start(parameters: int, device: torch.device, precision: str, world_size: int, train: TrainConfig) -> None:
    log.info(
        "model: %.1fM parameters; device %s, %s, %d CPU thread(s) per process, world size %d, "
        "%d micro-batch(es) of <=%d tokens per rank and step",
        parameters / 1e6,
        device,
        precision,
        torch.get_num_threads(),
        world_size,
        train.update_freq,
        train.max_tokens,
    )


def log_world_size_change(before: int, now: int, train: TrainConfig) -> None:
    log.info(
        "the run was trained on %d process(es) and continues on %d: a step now takes %d micro-batches of "
        "<= %d tokens instead of %d (the same batches in the same order, dealt to more or fewer ranks; "
        "dropout's random streams start afresh)",
        before,
        now,
        now * train.update_freq,
        train.max_tokens,
        before * train.update_freq,
    )


def out_of_time(train: TrainConfig, elapsed: float) -> bool:
    """Whether train.max_minutes of training wall-clock (`elapsed`, earlier processes of the run
    included) is spent."""
    return train.max_minutes > 0 and elapsed >= 60 * train.max_minutes


def finished_message(step: int, train: TrainConfig, elapsed: float) -> str:
    """What a finished run says when it is run again ('' when it is not finished)."""
    if step >= train.max_steps:
        return f"already finished at step {step} (max_steps {train.max_steps}); raise train.max_steps to continue"
    if out_of_time(train, elapsed):
        return (
            f"already finished at step {step}: {clock(elapsed)} of training reached max_minutes {train.max_minutes:g}; "
            "raise train.max_minutes to continue"
        )
    return ""


MAX_BAD_STEPS = 5  # consecutive non-finite losses before giving up
MIN_LOSS_SCALE = 1e-4  # fairseq's min_loss_scale: below it, no scale makes the fp16 gradient finite


def skip_non_finite(in_a_row: int, step: int, scaler: torch.amp.GradScaler) -> int:
    """Note a skipped non-finite step, stop with a one-line error once training has diverged, and
    return the count of such steps in a row. fp16 overflows are expected while the loss scale settles
    (fairseq skips them too): give up only when the scale falls below MIN_LOSS_SCALE; otherwise after
    MAX_BAD_STEPS in a row."""
    if scaler.is_enabled():
        check_loss_scale(scaler.get_scale(), step)
        return 0
    check_bad_steps(in_a_row, step, MAX_BAD_STEPS)
    return in_a_row


def check_loss_scale(scale: float, step: int) -> None:
    """Note a skipped fp16 overflow step; stop with a one-line error once the loss scale is hopeless."""
    log.info("step %d: fp16 gradient overflow; update skipped, loss scale lowered to %g", step, scale)
    if scale < MIN_LOSS_SCALE:
        raise MtrainError(
            f"fp16 loss scale fell to {scale:g} at step {step}: the gradient is not finite at any scale; "
            "training diverged; lower train.lr_scale, set train.clip_norm, or use bf16/fp32"
        )


def check_bad_steps(in_a_row: int, step: int, limit: int) -> None:
    """Warn about a skipped non-finite step; after `limit` in a row, stop with a one-line error."""
    log.warning("step %d: loss or gradient is not finite; update skipped (%d in a row)", step, in_a_row)
    if in_a_row >= limit:
        raise MtrainError(
            f"{in_a_row} non-finite steps in a row at step {step}: training diverged; lower train.lr_scale, "
            "set train.clip_norm, or use fp32/bf16"
        )

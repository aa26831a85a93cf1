"""The optimizer and its learning-rate schedule: Adam with the paper's inverse-square-root warmup
(section 5.3, equation 3), optionally cooled down to 0 at the end of the step or time budget."""

from __future__ import annotations

import torch

from mtrain.config import TrainConfig


def learning_rate(step: int, d_model: int, warmup: int, scale: float = 1.0, peak: float = 0.0) -> float:
    """lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), step counted from 1; with
    a `peak` (train.lr), the same shape with that value at step = warmup instead:
    peak * min((warmup / step)^0.5, step / warmup)."""
    step = max(step, 1)
    shape = min(step**-0.5, step * warmup**-1.5)
    if peak:
        return peak * shape * warmup**0.5
    return scale * d_model**-0.5 * shape


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


def scheduled_lr(train: TrainConfig, d_model: int, step: int, elapsed_s: float) -> float:
    """The learning rate of step `step + 1`: the paper's schedule times the cooldown factor. The
    budget spent is the larger of the step and the time budget's shares; `elapsed_s` is the
    ranks' mean clock, so that every rank takes the same lr."""
    lr = learning_rate(step + 1, d_model, train.warmup_steps, train.lr_scale, train.lr)
    budget_spent = step / train.max_steps
    if train.max_minutes:
        budget_spent = max(budget_spent, elapsed_s / (60 * train.max_minutes))
    return lr * cooldown_factor(budget_spent, train.cooldown)


def adam(model: torch.nn.Module, train: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with the configured betas and epsilon (the paper: 0.9, 0.98, 1e-9); the schedule sets
    its learning rate before every step."""
    return torch.optim.Adam(
        model.parameters(),
        lr=0.0,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_eps,
        fused=device.type in ("cuda", "cpu"),  # one kernel for all parameters: faster than the loop on CPU too
    )

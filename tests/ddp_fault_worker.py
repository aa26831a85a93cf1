"""A torchrun worker for test_distributed: real mtrain training with a fault injected on rank 1.

ddp_fault_worker.py CONFIG fail    rank 1 raises at step 3
ddp_fault_worker.py CONFIG clock   rank 1's training clock runs 10 s per step (rank 0's stays at 0), and
                                   rank 1 always finds its last save long ago (rank 0 never does)
"""

import logging
import sys

import mtrain.training.trainer as train_module
from mtrain.config_io import load_config
from mtrain.training.session import train

original_step = train_module.Trainer.train_step


def failing_step(self, micro_batches):
    if self.dist.rank == 1 and self.progress.step == 3:
        raise RuntimeError("injected failure on rank 1")
    return original_step(self, micro_batches)


def rank_one_clock(self):
    return 10.0 * self.progress.step if self.dist.rank == 1 else 0.0


def rank_one_saved_long_ago(self, micro_batches):
    if self.dist.rank == 1:
        self.last_save = 0.0  # the epoch: a timed save is due on rank 1 alone
    return original_step(self, micro_batches)


logging.basicConfig(level=logging.INFO, format="%(message)s")  # the run's log lines, to stderr
fault = sys.argv[2]
if fault == "fail":
    train_module.Trainer.train_step = failing_step
elif fault == "clock":
    train_module.Trainer.elapsed = rank_one_clock
    train_module.Trainer.train_step = rank_one_saved_long_ago
else:
    raise SystemExit(f"unknown fault {fault!r}: fail or clock")
train(load_config(sys.argv[1]))

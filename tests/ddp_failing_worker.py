"""A torchrun worker for test_distributed: real mtrain training in which rank 1 raises at step 3."""

import sys

import mtrain.train as train_module
from mtrain.config import load_config

original_step = train_module.Trainer.train_step


def failing_step(self, micro_batches):
    if self.dist.rank == 1 and self.progress.step == 3:
        raise RuntimeError("injected failure on rank 1")
    return original_step(self, micro_batches)


train_module.Trainer.train_step = failing_step
train_module.train(load_config(sys.argv[1]))

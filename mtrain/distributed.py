"""torchrun environment, process group, rank helpers.

The launcher that starts torchrun is `mtrain.launcher`. Single-process runs need nothing here:
every helper degrades to a no-op when WORLD_SIZE is unset or 1. Under torchrun
(`torch.distributed.run`), RANK / WORLD_SIZE / LOCAL_RANK select the process's role and device;
NCCL is used on CUDA, gloo on CPU, with a timeout on collectives so that a dead peer ends the job
instead of hanging it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mtrain.launcher import die_with_parent, launched_by_torchrun


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> DistInfo:
    """This process' place in the job, from torchrun's environment variables."""
    return DistInfo(
        int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    )


def init(info: DistInfo, device: torch.device, timeout_minutes: float) -> None:
    """Join the process group when launched by torchrun with more than one process (whose death ends this one)."""
    if launched_by_torchrun():
        die_with_parent()
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(minutes=timeout_minutes),
            device_id=device if device.type == "cuda" else None,
        )


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (the numbers themselves when not distributed)."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj: object) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown(finished: bool) -> None:
    """Leave the process group. After a finished run every rank first waits for the others: a rank
    that tears down its gloo connections while a peer is still saving can abort at exit ("terminate
    called without an active exception", seen once in CI). After an error nobody waits: the peer
    may be dead."""
    if not dist.is_initialized():
        return
    if finished:
        dist.barrier()
    dist.destroy_process_group()

"""torchrun environment, process group, rank helpers.

Single-process runs need nothing here: every helper degrades to a no-op when WORLD_SIZE is
unset or 1. Under torchrun (`torch.distributed.run`), RANK / WORLD_SIZE / LOCAL_RANK select
the process's role and device; NCCL is used on CUDA, gloo on CPU, with a timeout on
collectives so that a dead peer ends the job instead of hanging it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist


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


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere nothing).

    The launcher, torchrun and the ranks form a chain: when a link is killed outright (kill -9,
    OOM killer), the processes below it would go on training as orphans holding the run's lock.
    With this, each receives SIGTERM instead, which the ranks answer by saving and exiting."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


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


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ


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


def launch(nproc_per_node: int, argv: list[str]) -> int:
    """Run `mtrain <argv>` in `nproc_per_node` processes through torchrun and return their status.

    torchrun gets its own session, so a Ctrl-C reaches it once, through here: SIGINT and SIGTERM
    sent to this launcher are forwarded to torchrun, which passes them to every rank; each rank
    saves once and exits, and so does the launcher, with the ranks' status (130: interrupted).
    SIGHUP (the terminal closed) is forwarded as SIGTERM; a launcher killed outright takes torchrun
    with it (die_with_parent), and torchrun the ranks."""
    job = subprocess.Popen(torchrun_command(nproc_per_node, argv), start_new_session=True, preexec_fn=die_with_parent)
    received = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        job.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        status = job.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 130 if received and status != 0 else status


def torchrun_command(nproc_per_node: int, argv: list[str]) -> list[str]:
    """The `python -m torch.distributed.run ... -m mtrain <argv>` command behind --nproc-per-node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
        "-m",
        "mtrain",
        *argv,
    ]

"""`mtrain train --nproc-per-node N`: start N training processes through torchrun.

Kept apart from `mtrain.distributed` and free of torch, so that the launcher, which only starts
torchrun and forwards signals to it, does not spend seconds importing torch before the ranks do.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

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


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ


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

"""Where and in which precision the model runs: device choice, precision, autocast, threads, memory.

One place for these decisions so that training, translation, export and the server agree.
bf16 autocast is the default on CUDA; on CPU the default is fp32 unless asked (bf16 is faster
on a CPU with AVX-512 BF16 kernels and far slower on one without them: docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from mtrain.config import DEVICES, PRECISIONS
from mtrain.config_checks import MAX_THREADS
from mtrain.errors import MtrainError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

log = logging.getLogger("mtrain")


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto` takes a GPU when there is one; asking for CUDA without one is a user error."""
    if requested not in DEVICES and not requested.startswith("cuda:"):
        raise MtrainError(f"unknown device '{requested}'; use one of {', '.join(DEVICES)} (or cuda:N)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise MtrainError(
            f"device '{requested}' was asked for but CUDA is not available here (torch {torch.__version__}); "
            "use --device cpu or auto, or install a CUDA build of torch"
        )
    if requested.startswith("cuda:"):
        return torch.device(requested)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def resolve_precision(device: torch.device, precision: str, option: str = "train.precision") -> str:
    """`auto` becomes bf16 on CUDA and fp32 on CPU; fp16 needs CUDA. `option` names the setting in errors."""
    if precision not in PRECISIONS:
        raise MtrainError(f"{option} '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise MtrainError(f"{option} fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        log.warning(
            "%s bf16: this CPU has no AVX-512 bf16 matrix kernels, so bf16 runs far slower than fp32 "
            "here (46x in training on one 2-core AVX2 host); use fp32 on this machine",
            option,
        )
    return precision


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 matrix kernels for this CPU (AVX-512 and newer). Without them torch
    falls back to a reference GEMM for bf16 matrix products, which is far slower than fp32.
    The check is a private torch op: a build without it counts as fast (no warning rather than a crash)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """Mixed-precision autocast for a resolved precision (nothing for fp32)."""
    dtype = AUTOCAST_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()


def rng_state(device: torch.device) -> dict:
    """This process's random streams (CPU, and the device's on CUDA), to save in a checkpoint."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def restore_rng_state(state: dict, device: torch.device) -> None:
    """Continue the random streams `rng_state` saved."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, lowered by a cgroup v2 CPU quota (containers)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, count)


def default_threads() -> int:
    """Threads per process when none are asked for: OMP_NUM_THREADS when set, else the usable CPUs
    shared among the processes of this node (torchrun's LOCAL_WORLD_SIZE)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    return max(1, available_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def check_threads(threads: int) -> None:
    """Refuse a thread count no machine runs well: more threads than the CPUs this process may use
    only stall each other, and hundreds of them exhaust a memory limit before any work starts."""
    if not 0 <= threads <= MAX_THREADS:
        raise MtrainError(f"--threads must be from 0 (the default) to {MAX_THREADS}, got {threads}")
    if threads > available_cpus():
        raise MtrainError(
            f"--threads {threads} is more than the {available_cpus()} CPUs this process may use; give at most "
            f"{available_cpus()} (0: the default)"
        )


def set_threads(threads: int = 0) -> int:
    """Use `threads` CPU threads for torch's operations (0: `default_threads()`); returns the number."""
    check_threads(threads)
    count = threads or default_threads()
    torch.set_num_threads(count)
    chosen = threads or os.environ.get("OMP_NUM_THREADS")  # a number the user chose is theirs to keep
    note = None if chosen else busy_machine_note(count)
    if note:
        log.warning(note)
    return count


def busy_machine_note(threads: int) -> str | None:
    """One line when other work already keeps this machine's CPUs busy (the 1-minute load average,
    of processes running or waiting, beside the CPUs this process may use): OpenMP threads that
    wait for cores slow every step several times over (docs/guides/training.md has figures), and
    fewer threads then run faster. None when `threads` fit beside that work."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # no load average on this system
        return None
    cpus = available_cpus()
    fitting = max(1, int(cpus - load + 0.5))
    if threads <= fitting:
        return None
    return (
        f"this machine is busy: load average {load:.1f} on {cpus} CPUs, and mtrain runs {threads} threads; threads "
        f"that wait for cores slow every step: give --threads {fitting} (train.threads: {fitting}) while that work runs"
    )


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc maps blocks above a moving threshold afresh and trims the top of its heap on
    free, so a CPU training step faults in and zeroes hundreds of MB of new pages, a measurable share
    of the step even with the chunked loss (docs/benchmarks.md). Now every
    block comes from the heap (no mmap; the mmap threshold at glibc's largest, 32 MB, for any
    thread that must map), and the heap is trimmed only above 1 GB of free space. Returns whether
    the settings took; other C libraries are left alone."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold, m_mmap_max = -1, -3, -4  # from <malloc.h>
    settings = ((m_mmap_threshold, 32 << 20), (m_trim_threshold, 1 << 30), (m_mmap_max, 0))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)

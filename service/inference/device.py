"""Device selection and CPU thread sizing from the container's CPU quota."""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def select_device(requested: str) -> torch.device:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU falls back to CPU (health: degraded)."""
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        log.warning("ML_API_DEVICE=cuda but no CUDA device is available; running on CPU")
    return torch.device("cpu")


def select_dtype(precision: str, device: torch.device) -> torch.dtype:
    # Reduced precision on CPU is slower than fp32 for these convolutions, so it is a GPU-only setting.
    return _DTYPES[precision] if device.type == "cuda" else torch.float32


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by cgroup v2 ``cpu.max`` (or v1 cfs quota), None when unlimited."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def torch_threads_for(workers: int, configured: int = 0, quota: float | None = None) -> int:
    """Intra-op threads per worker: the CPU quota (or core count) shared among workers, at least 1."""
    if configured > 0:
        return configured
    cpus = quota if quota is not None else float(os.cpu_count() or 1)
    return max(1, math.floor(cpus / max(1, workers)))


def thread_budget(workers: int, configured: int) -> ThreadBudget:
    """This process's inference threads: the CPU quota shared among workers, or ``configured`` fixed."""
    return ThreadBudget(torch_threads_for(workers, 0, cpu_quota()), fixed=configured or None)


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by ``niceness`` (Linux: nice is per thread).

    Used as the initializer of inference and decode threads: at saturation the event loop, which
    answers health probes and accepts requests, then preempts them instead of queueing behind them.
    Threads they start (torch's OpenMP pool) inherit the value.
    """
    if niceness <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError as exc:  # e.g. a seccomp profile that forbids it: run at normal priority
        log.debug("could not lower thread priority: %s", exc)


class ThreadBudget:
    """The CPU threads this process may use for inference, shared by every model instance.

    torch's intra-op thread count is one process-wide value, read at the start of each parallel region.
    So the count follows how many instances are running a batch: one lone batch gets every thread (the
    lowest latency), and when every instance is busy each gets ``budget / busy`` threads (one per core
    each: the highest throughput). ``fixed`` pins the count instead (``ML_API_TORCH_THREADS``).
    """

    def __init__(self, budget: int, fixed: int | None = None) -> None:
        self.budget = max(1, budget)
        self.fixed = fixed
        self._busy = 0
        self._lock = threading.Lock()
        torch.set_num_threads(fixed or self.budget)

    @property
    def busy(self) -> int:
        return self._busy

    def acquire(self) -> int:
        """Called by an instance about to run a batch; returns the threads that batch runs with."""
        with self._lock:
            self._busy += 1
            return self._apply()

    def release(self) -> None:
        with self._lock:
            self._busy = max(0, self._busy - 1)
            self._apply()

    def _apply(self) -> int:
        threads = self.fixed or max(1, self.budget // max(1, self._busy))
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads


def instances_for(configured: int, budget: int) -> int:
    """Model instances per version: ``configured`` when set, else one per thread of the budget."""
    return configured if configured > 0 else max(1, budget)

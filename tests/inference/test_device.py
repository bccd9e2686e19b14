"""torch threads from the cgroup CPU quota, shared among workers."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from service.app import create_app
from service.inference import device
from tests.conftest import make_settings, running_app


def _cgroup(root: Path, cpu_max: str | None = None, quota_us: str | None = None, period_us: str = "100000") -> Path:
    """A cgroup directory as the kernel lays it out (v2 ``cpu.max``, or v1 ``cpu/cpu.cfs_*``)."""
    root.mkdir(parents=True, exist_ok=True)
    if cpu_max is not None:
        (root / "cpu.max").write_text(cpu_max + "\n")
    if quota_us is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(quota_us + "\n")
        (root / "cpu" / "cpu.cfs_period_us").write_text(period_us + "\n")
    return root


@pytest.mark.parametrize(
    ("cpu_max", "quota_us", "expected"),
    [
        ("200000 100000", None, 2.0),
        ("150000 100000", None, 1.5),
        ("max 100000", None, None),
        (None, "400000", 4.0),
        (None, "-1", None),
        (None, None, None),
    ],
    ids=["v2-two-cpus", "v2-fractional", "v2-unlimited", "v1-four-cpus", "v1-unlimited", "no-cgroup-files"],
)
def test_cpu_quota_is_read_from_the_cgroup(
    tmp_path: Path, cpu_max: str | None, quota_us: str | None, expected: float | None
) -> None:
    assert device.cpu_quota(_cgroup(tmp_path / "cg", cpu_max, quota_us)) == expected


@pytest.mark.parametrize(
    ("cpu_max", "workers", "configured", "expected"),
    [
        ("800000 100000", 1, 0, 8),
        ("800000 100000", 2, 0, 4),
        ("800000 100000", 3, 0, 2),  # floor: never more threads than the quota allows
        ("150000 100000", 4, 0, 1),  # at least one
        ("800000 100000", 2, 6, 6),  # ML_API_TORCH_THREADS wins
    ],
)
def test_torch_threads_are_the_quota_shared_by_workers(
    tmp_path: Path, cpu_max: str, workers: int, configured: int, expected: int
) -> None:
    quota = device.cpu_quota(_cgroup(tmp_path / "cg", cpu_max))
    assert device.torch_threads_for(workers, configured, quota) == expected


def test_torch_threads_without_a_quota_use_the_core_count() -> None:
    cores = os.cpu_count() or 1
    assert device.torch_threads_for(1, 0, None) == cores
    assert device.torch_threads_for(cores * 2, 0, None) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(("workers", "configured"), [(2, 0), (1, 3)])
async def test_app_start_sets_torch_threads(workers: int, configured: int) -> None:
    before = torch.get_num_threads()
    try:
        async with running_app(create_app(make_settings(workers=workers, torch_threads=configured))):
            threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    # This machine's own cgroup (or core count) is the input when nothing is configured.
    cpus = device.cpu_quota() or float(os.cpu_count() or 1)
    assert threads == (configured or max(1, math.floor(cpus / workers)))

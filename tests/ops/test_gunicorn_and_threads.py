"""gunicorn layout, multiprocess metrics across workers, torch threads from the cgroup CPU quota, /health."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.inference import device
from tests.conftest import ROOT, make_settings, running_app
from tests.ops.servers import server


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


@pytest.mark.anyio
async def test_health_is_degraded_when_cuda_is_configured_but_absent() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: ML_API_DEVICE=cuda is satisfied")
    async with running_app(create_app(make_settings(device="cuda"))) as client:
        body = (await client.get("/health")).json()
        ready = await client.get("/health/ready")
    assert (body["status"], body["model_loaded"], body["gpu_available"]) == ("degraded", True, False)
    assert [m["device"] for m in body["models"]] == ["cpu"]
    assert ready.status_code == 200  # degraded still serves, on CPU


@pytest.mark.anyio
async def test_health_is_healthy_on_cpu() -> None:
    async with running_app(create_app(make_settings(device="cpu"))) as client:
        body = (await client.get("/health")).json()
    assert (body["status"], body["model_loaded"]) == ("healthy", True)


def _gunicorn_conf(env: dict[str, str]) -> dict[str, object]:
    """Import the config the way the gunicorn master does: a fresh interpreter, settings from the env."""
    code = (
        "import json, os, sys; import service.gunicorn_conf as c; "
        "print(json.dumps({'bind': c.bind, 'workers': c.workers, 'worker_class': c.worker_class, "
        "'timeout': c.timeout, 'graceful_timeout': c.graceful_timeout, 'keepalive': c.keepalive, "
        "'preload_app': c.preload_app, 'accesslog': c.accesslog, "
        "'multiproc': os.environ.get('PROMETHEUS_MULTIPROC_DIR'), "
        "'prometheus_imported': 'prometheus_client' in sys.modules, "
        "'torch_imported': 'torch' in sys.modules, "
        "'json_formatter': c.logconfig_dict['formatters']['default'].get('()')}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ML_API_", "PROMETHEUS_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_gunicorn_conf_single_worker_layout() -> None:
    conf = _gunicorn_conf({"ML_API_PORT": "9123", "ML_API_SHUTDOWN_GRACE_S": "20"})
    assert conf == {
        "bind": "0.0.0.0:9123",
        "workers": 1,
        "worker_class": "uvicorn.workers.UvicornWorker",
        "timeout": 120,
        "graceful_timeout": 25,
        "keepalive": 75,
        "preload_app": False,
        "accesslog": None,
        "multiproc": None,  # one worker keeps exemplars: no multiprocess mode
        "prometheus_imported": False,
        "torch_imported": False,
        "json_formatter": "pythonjsonlogger.json.JsonFormatter",
    }


def test_gunicorn_conf_with_workers_sets_a_clean_multiprocess_dir_before_prometheus_is_imported(
    tmp_path: Path,
) -> None:
    stale = tmp_path / "prom"
    stale.mkdir()
    (stale / "counter_12345.db").write_bytes(b"stale")
    conf = _gunicorn_conf({"ML_API_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(stale)})
    assert conf["workers"] == 2
    assert conf["multiproc"] == str(stale)
    assert conf["prometheus_imported"] is False  # workers import it after fork, with the variable set
    assert list(stale.iterdir()) == []  # a previous run's files would double-count


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


@pytest.mark.slow
def test_two_gunicorn_workers_add_up_their_counts(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    prom_dir = tmp_path / "prom"
    env = {"ML_API_WORKERS": "2", "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}
    with server("gunicorn", env, tmp_path / "stderr.log") as srv:
        upload = {"handler": "/api/v1/predict/upload", "method": "POST", "status": "2xx"}
        success = {"model": "digits", "version": "1", "outcome": "success"}
        statuses: list[int] = []
        lock = threading.Lock()

        def burst(count: int) -> None:
            for index in range(count):
                # A new connection per request, so the kernel spreads them over both workers' accept().
                response = httpx.post(
                    f"{srv.base}/api/v1/predict/upload",
                    content=digit_pngs[index % len(digit_pngs)],
                    headers={"Content-Type": "image/png", "X-Request-ID": f"mp-{threading.get_ident()}-{index}"},
                    timeout=30,
                )
                with lock:
                    statuses.append(response.status_code)

        threads = [threading.Thread(target=burst, args=(15,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        sent = len(statuses)
        assert statuses == [200] * 60
        access = srv.wait_for_log(lambda r: r.get("logger") == "service.access" and r["request_id"].startswith("mp-"))
        pids = {r["pid"] for r in access}
        if len(pids) < 2:
            pytest.fail(f"all {sent} requests went to one worker ({pids}); the sum would prove nothing")
        # Several scrapes: each may land on either worker, and each must report the whole pod.
        for _ in range(4):
            text = httpx.get(f"{srv.base}/metrics", timeout=10).text
            assert _sample(text, "http_requests_total", upload) == sent
            assert _sample(text, "ml_api_predictions_total", success) == sent
            assert _sample(text, "ml_api_model_loaded", {"model": "digits", "version": "1"}) == 1.0
        assert {p.name.split("_")[-1] for p in prom_dir.iterdir()} >= {f"{pid}.db" for pid in pids}

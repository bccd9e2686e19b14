"""gunicorn layout and multiprocess metrics across workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.servers import server


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
        "worker_class": "service.gunicorn_worker.ServiceWorker",
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

"""gunicorn settings for production: ``gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'``.

One worker per pod is the recommended layout (scale with replicas): each worker holds its own model
copy, and prometheus_client drops exemplars in multiprocess mode, which more than one worker needs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from service.observability.logging import logging_config
from service.settings import load_settings

_settings = load_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
worker_class = "uvicorn.workers.UvicornWorker"
# Model load happens in the background after the worker boots, so the boot timeout stays short.
timeout = 120
graceful_timeout = int(_settings.shutdown_grace_s) + 5
keepalive = 75  # longer than common load-balancer idle timeouts (60 s), so they close first
preload_app = False  # torch and fork don't mix (gunicorn#2621): each worker imports and loads itself
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)
accesslog = None
proc_name = "ml-api"

if workers > 1:
    # Several processes need prometheus_client's file-backed multiprocess mode, set before workers import it.
    _dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="ml-api-prom-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir
    if os.path.isdir(_dir):
        for name in os.listdir(_dir):  # stale files from an earlier run would double-count
            shutil.rmtree(os.path.join(_dir, name), ignore_errors=True) if os.path.isdir(
                os.path.join(_dir, name)
            ) else os.unlink(os.path.join(_dir, name))
    os.environ.setdefault("ML_API_WORKERS", str(workers))


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

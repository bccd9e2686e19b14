"""gunicorn settings for production: ``gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'``.

One worker per pod is the recommended layout (scale with replicas): each worker holds its own model
copy, and prometheus_client drops exemplars in multiprocess mode, which more than one worker needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from typing import Any

from service.observability.logging import logging_config
from service.settings import load_settings
from service.signals import exit_zero

_settings = load_settings()

bind = f"{_settings.host}:{_settings.port}"
workers = _settings.workers
worker_class = "service.gunicorn_worker.ServiceWorker"
# Model load happens in the background after the worker boots, so the boot timeout stays short.
timeout = 120
graceful_timeout = int(_settings.shutdown_grace_s) + 5
keepalive = 75  # longer than common load-balancer idle timeouts (60 s), so they close first
# torch's thread pools do not survive fork, so a preloaded app would hang or misbehave in the workers:
# each worker imports torch and loads its models itself.
preload_app = False
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
logconfig_dict = logging_config(_settings.log_level, _settings.log_format)
accesslog = None
proc_name = "ml-api"

_created_multiproc_dir: str | None = None
if workers > 1:
    # Several processes need prometheus_client's file-backed multiprocess mode. This module is imported by
    # the gunicorn master before it forks, and nothing here imports prometheus_client, so every worker sees
    # the variable when it first imports prometheus_client (which picks its value class at import time).
    _dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not _dir:
        _dir = _created_multiproc_dir = tempfile.mkdtemp(prefix="ml-api-prom-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir
    os.makedirs(_dir, exist_ok=True)
    for _name in os.listdir(_dir):  # stale files from an earlier run would double-count
        _path = os.path.join(_dir, _name)
        if os.path.isdir(_path):
            shutil.rmtree(_path, ignore_errors=True)
        else:
            os.unlink(_path)
    os.environ.setdefault("ML_API_WORKERS", str(workers))


def post_worker_init(worker: Any) -> None:
    # UvicornWorker resets SIGTERM to the default; after its graceful shutdown uvicorn re-raises the signal,
    # which would kill the worker by signal and make the master log an error. Exit 0 instead.
    signal.signal(signal.SIGTERM, exit_zero)


def on_exit(server: Any) -> None:
    if _created_multiproc_dir:
        shutil.rmtree(_created_multiproc_dir, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

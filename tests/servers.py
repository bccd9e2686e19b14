"""Real server processes for the operations tests: ``python -m service`` or gunicorn, JSON logs captured."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, free_port

VENV_BIN = Path(sys.executable).parent


class Server:
    """One server process on 127.0.0.1 whose stderr (the JSON log stream) goes to ``log_path``."""

    def __init__(self, kind: str, env: dict[str, str], log_path: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Every server also serves gRPC, on a port of its own (``grpc_target``), unless env says 0.
        self.grpc_port = int(env.get("ML_API_GRPC_PORT") or free_port())
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        self.env = {
            # The developer's own settings and exporters never leak in.
            **{k: v for k, v in os.environ.items() if not k.startswith(("ML_API_", "OTEL_", "PROMETHEUS_"))},
            "ML_API_HOST": "127.0.0.1",
            "ML_API_PORT": str(self.port),
            "ML_API_GRPC_PORT": str(self.grpc_port),
            "ML_API_LOG_FORMAT": "json",
            **env,
        }
        if kind == "uvicorn":
            command = [sys.executable, "-m", "service"]
        else:
            command = [str(VENV_BIN / "gunicorn"), "-c", "python:service.gunicorn_conf", "service.app:create_app()"]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"server not ready within {timeout}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as JSON; a line that is not JSON fails the test."""
        records = []
        for line in self.log_text().splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"a log line is not JSON: {line!r}") from None
        return records

    def access_lines(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.log_records() if r.get("logger") == "service.access" and r["request_id"] == request_id]

    def wait_for_log(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Log lines are written after the response is sent: poll (bounded) until one matches."""
        deadline = time.monotonic() + timeout
        while True:
            matches = [r for r in self.log_records() if predicate(r)]
            if matches or time.monotonic() > deadline:
                return matches
            time.sleep(0.05)

    def terminate(self) -> int:
        """SIGTERM; returns the exit status (killing the group only when it hangs past every grace period)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=10)
        finally:
            self._log.close()


@contextlib.contextmanager
def server(kind: str, env: dict[str, str], log_path: Path, timeout: float = 90.0) -> Iterator[Server]:
    srv = Server(kind, env, log_path)
    try:
        srv.wait_ready(timeout)
        yield srv
    finally:
        srv.terminate()

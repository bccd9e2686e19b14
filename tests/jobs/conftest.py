"""Fixtures for the job backends: a real redis-server per test or module, and service processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import ROOT, free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """A redis-server on a free loopback port in its own directory; AOF with fsync on every write."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def start(self, timeout: float = 10.0) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"redis-server exited: {log}")
            with contextlib.suppress(redis.RedisError), self.client() as probe:
                if probe.ping():
                    return
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer PING in time")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown save, so only what the AOF already holds survives."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextlib.contextmanager
def redis_server_running() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server; .ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="ml-api-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with redis_server_running() as server:
        yield server


class ServiceProcess:
    """``python -m service`` on a free loopback port, with a handle to signal it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ML_API_", "OTEL_"))},
            "ML_API_HOST": "127.0.0.1",
            "ML_API_PORT": str(self.port),
            "ML_API_GRPC_PORT": "0",  # replicas run side by side here; the job tests need no gRPC
            "ML_API_LOG_FORMAT": "text",
            "ML_API_SHUTDOWN_GRACE_S": "5",
            **env,
        }
        self.log = tempfile.NamedTemporaryFile(prefix="ml-api-service-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"], env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"service exited {self.process.returncode}: {self.output()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/health/ready", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"service not ready in {timeout}s: {self.output()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


@contextlib.contextmanager
def services(*envs: dict[str, str]) -> Iterator[list[ServiceProcess]]:
    """Start every service at once (model load in parallel), wait for all to be ready, stop all after."""
    started = [ServiceProcess(env) for env in envs]
    try:
        for service in started:
            service.wait_ready()
        yield started
    finally:
        for service in started:
            service.stop()


def redis_env(server: RedisServer, **extra: str) -> dict[str, str]:
    return {"ML_API_JOBS_BACKEND": "redis", "ML_API_REDIS_URL": server.url, **extra}


def wait_for_job(base: str, job_id: str, statuses: tuple[str, ...] = ("completed", "failed"), timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll GET /api/v1/jobs/{id} until its status is one of ``statuses``; returns the JobStatus body."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{base}/api/v1/jobs/{job_id}", timeout=5)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {body['status']} after {timeout}s")
        time.sleep(0.02)

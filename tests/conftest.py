"""Shared fixtures: settings, an app with its lifespan running, digit images, live servers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import Settings
from service.training.digits_data import digit_png, load_split

if TYPE_CHECKING:
    from tests.servers import Server

ROOT = Path(__file__).resolve().parent.parent


def schemas_root() -> Path | None:
    """Third-party JSON schemas (crds/, skaffold/): ``$ML_API_SCHEMAS_DIR``, else ../shared/schemas.

    They are not the project's, so they are read from beside the checkout, never copied into it.
    """
    env = os.environ.get("ML_API_SCHEMAS_DIR")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "schemas"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned helm binary; tests that need it skip with the install command otherwise."""
    from tests.chart.helm import helm_path

    path = helm_path()
    if path is None:
        pytest.skip("helm not installed: run `make tools` (pinned helm in .tools/bin) or set HELM=/path/to/helm")
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits (images, labels) the bundled model never saw in training."""
    _, _, x_test, y_test = load_split()
    return x_test, y_test


@pytest.fixture(scope="session")
def digit_pngs(digits: tuple[np.ndarray, np.ndarray]) -> list[bytes]:
    return [digit_png(image) for image in digits[0]]


def make_settings(**overrides: Any) -> Settings:
    """Settings from explicit values only: the developer's environment and .env never leak in. gRPC is off
    unless a test asks for it (``grpc_port=free_port()``): apps of parallel test runs share the machine."""
    return Settings(_env_file=None, log_format="text", **{"grpc_port": 0, **overrides})


@contextlib.asynccontextmanager
async def running_app(app: FastAPI, *, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and yield a client talking to it in-process (no sockets)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as client:
            if wait_ready:
                await wait_until_ready(client)
            yield client


async def wait_until_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> None:
    import anyio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await client.get("/health/ready")).status_code == 200:
            return
        await anyio.sleep(0.05)
    raise AssertionError("the app did not become ready in time")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(create_app(make_settings())) as c:
        yield c


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[str]:
    """``python -m service`` in a subprocess on 127.0.0.1; yields its base URL once ready."""
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ML_API_", "OTEL_"))},
        "ML_API_HOST": "127.0.0.1",
        "ML_API_PORT": str(port),
        "ML_API_GRPC_PORT": str(free_port()),
        "ML_API_LOG_FORMAT": "json",
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], env=full_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("server did not become ready")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared server with API keys, CORS and JSON logs (tests/secured.py)."""
    from tests.secured import SECURED_ENV
    from tests.servers import server

    log = tmp_path_factory.mktemp("live") / "stderr.log"
    with server("uvicorn", SECURED_ENV, log) as srv:
        yield srv

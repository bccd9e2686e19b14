"""Graceful shutdown: readiness 503 at once, new work refused, in-flight requests finish, exit 0."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from service.app import create_app
from tests.conftest import make_settings, running_app
from tests.servers import Server

SHUTTING_DOWN = "SHUTTING_DOWN"


@pytest.mark.anyio
async def test_draining_refuses_new_requests_and_finishes_in_flight_ones(digit_pngs: list[bytes]) -> None:
    """The state the SIGTERM handler switches on, observed in-process where timing is deterministic."""
    app = create_app(make_settings())
    release = anyio.Event()
    png = digit_pngs[0]

    async def held_body() -> AsyncIterator[bytes]:
        yield png[:10]
        await release.wait()  # the request is in flight, its body half sent
        yield png[10:]

    async with running_app(app) as client, anyio.create_task_group() as group:
        in_flight: list[httpx.Response] = []

        async def send_held() -> None:
            in_flight.append(
                await client.post("/api/v1/predict/upload", content=held_body(), headers={"Content-Type": "image/png"})
            )

        group.start_soon(send_held)
        await anyio.sleep(0.2)
        app.state.drain.draining = True
        ready = await client.get("/health/ready", headers={"X-Request-ID": "drain-ready"})
        new = await client.post(
            "/api/v1/predict/upload", content=png, headers={"Content-Type": "image/png", "X-Request-ID": "new"}
        )
        still_answering = {p: (await client.get(p)).status_code for p in ("/health/live", "/health", "/metrics")}
        release.set()
    assert ready.status_code == 503
    assert ready.json() == {
        "error": SHUTTING_DOWN,
        "message": "the server is shutting down",
        "path": "/health/ready",
        "request_id": "drain-ready",
    }
    assert new.status_code == 503
    assert new.json()["error"] == SHUTTING_DOWN
    assert still_answering == {"/health/live": 200, "/health": 200, "/metrics": 200}
    assert [r.status_code for r in in_flight] == [200]
    assert in_flight[0].json()["predictions"][0]["label"] == "7"


def _trickle(png: bytes, sent_first: threading.Semaphore, chunks: int = 8, pause: float = 0.2) -> Iterator[bytes]:
    """A body sent slowly, so the request is in flight when SIGTERM arrives.

    httpx asks for the second chunk only after the headers and the first chunk are on the socket.
    """
    step = max(1, len(png) // chunks)
    for index, start in enumerate(range(0, len(png), step)):
        if index == 1:
            sent_first.release()
        yield png[start : start + step]
        time.sleep(pause)


def _sigterm_under_load(srv: Server, png: bytes, grace_s: float) -> None:
    slow_results: list[object] = []
    fast_results: list[tuple[float, object]] = []
    stop_fast = threading.Event()
    sent_first = threading.Semaphore(0)

    def slow() -> None:
        try:
            response = httpx.post(
                f"{srv.base}/api/v1/predict/upload",
                content=_trickle(png, sent_first),
                headers={"Content-Type": "image/png"},
                timeout=30,
            )
            slow_results.append((response.status_code, response.json().get("error")))
        except httpx.HTTPError as exc:
            slow_results.append(repr(exc))

    def fast() -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(500):  # bounded; stopped at SIGTERM
                if stop_fast.is_set():
                    return
                started = time.monotonic()
                try:
                    response = client.post(
                        f"{srv.base}/api/v1/predict/upload", content=png, headers={"Content-Type": "image/png"}
                    )
                    fast_results.append((started, (response.status_code, response.json().get("error"))))
                except httpx.HTTPError as exc:
                    fast_results.append((started, repr(exc)))

    threads = [threading.Thread(target=slow) for _ in range(6)] + [threading.Thread(target=fast) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(6):
        assert sent_first.acquire(timeout=30), "a slow upload never started"
    # One round trip through the server's event loop after those bytes were on their sockets: the loop has
    # read them by then, so every slow request has entered the app (it is in flight, mid-body).
    assert httpx.get(f"{srv.base}/health/live", timeout=10).status_code == 200
    stop_fast.set()
    signalled = time.monotonic()
    srv.process.send_signal(signal.SIGTERM)
    probes: list[object] = []
    for _ in range(10):
        try:
            response = httpx.get(f"{srv.base}/health/ready", timeout=5)
            probes.append((response.status_code, response.json()["error"]))
        except httpx.TransportError:
            probes.append("refused")
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=30)
    returncode = srv.process.wait(timeout=grace_s + 10)
    exited_after = time.monotonic() - signalled
    assert slow_results == [(200, None)] * 6
    before = [outcome for started, outcome in fast_results if started < signalled]
    assert before, "the concurrent load never got going"
    # A request that raced the signal may be refused as new work, never failed otherwise.
    assert set(before) <= {(200, None), (503, SHUTTING_DOWN)}, before
    assert set(probes) <= {(503, SHUTTING_DOWN), "refused"}, probes
    assert returncode == 0
    assert exited_after < grace_s
    records = srv.log_records()
    assert any(r["message"].startswith("SIGTERM: draining") for r in records)
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []


@pytest.mark.slow
def test_sigterm_under_load_python_m_service(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    srv = Server("uvicorn", {"ML_API_SHUTDOWN_GRACE_S": "10"}, tmp_path / "stderr.log")
    try:
        srv.wait_ready()
        _sigterm_under_load(srv, digit_pngs[0], grace_s=10)
    finally:
        srv.terminate()


@pytest.mark.slow
def test_sigterm_under_load_gunicorn(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    srv = Server("gunicorn", {"ML_API_SHUTDOWN_GRACE_S": "10", "ML_API_WORKERS": "1"}, tmp_path / "stderr.log")
    try:
        srv.wait_ready()
        # gunicorn's graceful_timeout is the grace period plus 5 s (gunicorn_conf).
        _sigterm_under_load(srv, digit_pngs[0], grace_s=15)
        messages = [r["message"] for r in srv.log_records() if r["logger"] == "gunicorn.error"]
        assert "Handling signal: term" in messages
        assert "Shutting down: Master" in messages
        assert not any("was sent SIGTERM" in m or "exited with code" in m for m in messages), messages
    finally:
        srv.terminate()

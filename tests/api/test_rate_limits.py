"""Per-client rate limits per route class, 429 RATE_LIMITED with Retry-After, trusted-proxy client keys."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from tests.conftest import make_settings, wait_until_ready

pytestmark = pytest.mark.anyio

LIMITS = {"predict": "3/minute", "batch": "1/minute", "jobs": "2/minute", "default": "4/minute"}


@contextlib.asynccontextmanager
async def app_from(peer: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = make_settings(rate_limit_enabled=True, rate_limits=LIMITS, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_from(app, peer) as client:
        await wait_until_ready(client)
        yield app, client


def client_from(app: FastAPI, peer: str) -> httpx.AsyncClient:
    """A client whose TCP peer address, as the app sees it, is ``peer``."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)


async def _upload(client: httpx.AsyncClient, png: bytes, **headers: str) -> httpx.Response:
    return await client.post("/api/v1/predict/upload", content=png, headers={"Content-Type": "image/png", **headers})


async def test_predict_limit_returns_429_rate_limited_with_retry_after(digit_pngs: list[bytes]) -> None:
    async with app_from("192.0.2.10") as (_, client):
        statuses = [(await _upload(client, digit_pngs[0])).status_code for _ in range(3)]
        limited = await _upload(client, digit_pngs[0], **{"X-Request-ID": "limited-1"})
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-Request-ID"] == "limited-1"
    assert limited.json() == {
        "error": "RATE_LIMITED",
        "message": "rate limit 3 per 1 minute exceeded for this client",
        "path": "/api/v1/predict/upload",
        "request_id": "limited-1",
    }


async def test_route_classes_have_separate_budgets(digit_pngs: list[bytes]) -> None:
    async with app_from("192.0.2.11") as (_, client):
        predict = [(await _upload(client, digit_pngs[0])).status_code for _ in range(4)]
        jobs = [(await client.get("/api/v1/jobs/unknown")).status_code for _ in range(3)]
        default = [(await client.get("/api/v1/models")).status_code for _ in range(5)]
        batch_body = {"images": [{"image_base64": "aGVsbG8="}]}
        batch = [(await client.post("/api/v1/predict/batch", json=batch_body)).status_code for _ in range(2)]
    assert predict == [200, 200, 200, 429]
    assert jobs == [404, 404, 429]
    assert default == [200, 200, 200, 200, 429]
    assert batch == [200, 429]


async def test_probes_and_metrics_are_never_limited() -> None:
    async with app_from("192.0.2.12") as (_, client):
        for path in ("/health", "/health/live", "/health/ready", "/health/startup", "/metrics"):
            assert [(await client.get(path)).status_code for _ in range(6)] == [200] * 6, path


async def test_clients_are_limited_separately(digit_pngs: list[bytes]) -> None:
    async with app_from("192.0.2.13") as (app, first):
        assert [(await _upload(first, digit_pngs[0])).status_code for _ in range(4)] == [200, 200, 200, 429]
        async with client_from(app, "192.0.2.14") as second:
            assert (await _upload(second, digit_pngs[0])).status_code == 200


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(digit_pngs: list[bytes]) -> None:
    async with app_from("10.0.0.5") as (_, client):
        statuses = [
            (await _upload(client, digit_pngs[0], **{"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(4)
        ]
    assert statuses == [200, 200, 200, 429]  # one budget: the peer's


async def test_x_forwarded_for_is_honoured_from_a_trusted_proxy_only(digit_pngs: list[bytes]) -> None:
    async with app_from("10.0.0.5", trusted_proxies=["10.0.0.0/8"]) as (app, proxy):
        via_proxy = [
            (await _upload(proxy, digit_pngs[0], **{"X-Forwarded-For": f"203.0.113.{n}"})).status_code for n in range(4)
        ]
        # The rightmost untrusted hop is the client: a spoofed left entry does not buy a fresh budget.
        spoofed = [
            (await _upload(proxy, digit_pngs[0], **{"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.0"})).status_code
            for n in range(3)
        ]
        async with client_from(app, "192.0.2.99") as untrusted:
            direct = [
                (await _upload(untrusted, digit_pngs[0], **{"X-Forwarded-For": f"203.0.113.{50 + n}"})).status_code
                for n in range(4)
            ]
    assert via_proxy == [200, 200, 200, 200]  # four clients behind the proxy, one request each
    assert spoofed == [200, 200, 429]  # 203.0.113.0 already spent one of its three
    assert direct == [200, 200, 200, 429]  # an untrusted peer's header is ignored


async def test_a_second_x_forwarded_for_line_is_read_like_a_comma_in_one(digit_pngs: list[bytes]) -> None:
    """Proxies such as HAProxy append their own header line: the client is the rightmost untrusted hop
    over all lines, so a spoofed first line buys no fresh budget."""
    async with app_from("10.0.0.5", trusted_proxies=["10.0.0.0/8"]) as (_, proxy):
        statuses = []
        for n in range(4):
            headers = [
                ("Content-Type", "image/png"),
                ("X-Forwarded-For", f"198.51.100.{n}"),
                ("X-Forwarded-For", "203.0.113.77"),
            ]
            response = await proxy.post("/api/v1/predict/upload", content=digit_pngs[0], headers=headers)
            statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429]  # every request is 203.0.113.77's


@pytest.mark.redis
async def test_an_unreachable_rate_limit_store_serves_unlimited_and_warns(
    digit_pngs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    from tests.jobs.conftest import redis_server_running

    with redis_server_running() as redis:
        async with app_from("192.0.2.30", rate_limit_storage_uri=redis.url) as (_, client):
            before = [(await _upload(client, digit_pngs[0])).status_code for _ in range(4)]
            redis.kill()
            during = [(await _upload(client, digit_pngs[0])).status_code for _ in range(5)]
    assert before == [200, 200, 200, 429]  # the store counts while it is up
    assert during == [200] * 5  # fail open: inference stays available, never a 500
    warnings = [r.getMessage() for r in caplog.records if r.name == "service.api.security"]
    assert len(warnings) == 1  # once per interval, not once per request
    assert warnings[0].startswith("rate-limit store unreachable")

"""API keys and CORS against a real ``python -m service`` process (see tests/secured.py)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.secured import API_KEY, AUTH, ORIGIN, upload
from tests.servers import Server

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ACCESS_KEYS = {
    "time", "level", "logger", "pid", "message", "request_id", "trace_id", "span_id",
    "method", "path", "status", "duration_ms", "client", "model", "version",
}  # fmt: skip


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"Authorization": f"Basic {API_KEY}"},
     {"Authorization": f"Bearer {API_KEY}x"}],
    ids=["missing", "wrong-bearer", "wrong-x-api-key", "basic-scheme", "key-prefix-only"],
)  # fmt: skip
def test_missing_or_wrong_api_key_is_401_with_www_authenticate(
    live: Server, digit_pngs: list[bytes], headers: dict[str, str]
) -> None:
    response = upload(live, digit_pngs[0], {**headers, "X-Request-ID": "ops-401"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers.get_list("X-Request-ID") == ["ops-401"]
    assert response.json() == {
        "error": "UNAUTHORIZED",
        "message": "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
        "path": "/api/v1/predict/upload",
        "request_id": "ops-401",
    }


@pytest.mark.parametrize("headers", [AUTH, {"X-API-Key": API_KEY}, {"authorization": f"bearer {API_KEY}"}])
def test_bearer_and_x_api_key_are_both_accepted(live: Server, digit_pngs: list[bytes], headers: dict[str, str]) -> None:
    response = upload(live, digit_pngs[0], headers)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "7"


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/health/startup", "/metrics"])
def test_health_and_metrics_need_no_key(live: Server, path: str) -> None:
    assert httpx.get(f"{live.base}{path}", timeout=10).status_code == 200


def test_configured_cors_origin_is_allowed_and_others_are_not(live: Server) -> None:
    allowed = httpx.get(f"{live.base}/api/v1/models", headers={**AUTH, "Origin": ORIGIN}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    preflight = httpx.options(
        f"{live.base}/api/v1/predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = httpx.get(f"{live.base}/api/v1/models", headers={**AUTH, "Origin": "https://evil.example"}, timeout=10)
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers

"""One real ``python -m service`` with API keys, CORS and JSON logs, shared by the request-ID, security
and logging tests (start-up costs seconds). Every test tags its requests with its own X-Request-ID and
reads the server's own stderr, so the tests stay independent."""

from __future__ import annotations

import httpx

from tests.servers import Server

API_KEY = "ops-test-key-5f2c9a71"
ORIGIN = "https://app.example"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SECURED_ENV = {
    "ML_API_API_KEYS": f'["{API_KEY}"]',
    "ML_API_CORS_ORIGINS": f'["{ORIGIN}"]',
    "ML_API_URL_FETCH_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
}


def upload(live: Server, png: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{live.base}/api/v1/predict/upload",
        content=png,
        headers={"Content-Type": "image/png", **headers},
        timeout=30,
    )

"""Async jobs over HTTP: idempotency keys belong to the API key that sent them."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from service.app import create_app
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio


async def _wait(client: httpx.AsyncClient, status_url: str, headers: dict[str, str]) -> dict:
    async with client.stream("GET", f"{status_url}/events", headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["status"] in ("completed", "failed"):
                break
    return (await client.get(status_url, headers=headers)).json()


async def test_the_same_idempotency_key_from_two_api_keys_is_two_jobs(digit_pngs: list[bytes]) -> None:
    app = create_app(make_settings(api_keys=["tenant-a-key", "tenant-b-key"]))
    a = {"X-API-Key": "tenant-a-key", "Idempotency-Key": "order-1"}
    b = {"X-API-Key": "tenant-b-key", "Idempotency-Key": "order-1"}
    async with running_app(app) as client:
        first = await client.post("/api/v1/predict/async", json={"image_base64": _b64(digit_pngs[0])}, headers=a)
        again = await client.post("/api/v1/predict/async", json={"image_base64": _b64(digit_pngs[1])}, headers=a)
        other = await client.post("/api/v1/predict/async", json={"image_base64": _b64(digit_pngs[1])}, headers=b)
        assert first.status_code == again.status_code == other.status_code == 202
        assert again.json()["job_id"] == first.json()["job_id"]  # the same tenant retrying
        assert other.json()["job_id"] != first.json()["job_id"]  # another tenant: its own job, its own image
        done_a = await _wait(client, first.json()["status_url"], a)
        done_b = await _wait(client, other.json()["status_url"], b)
        direct = await client.post(
            "/api/v1/predict/upload", content=digit_pngs[1], headers={**b, "Content-Type": "image/png"}
        )
    # Tenant B's job classified B's image: the same scores as B's direct request, up to the float
    # noise of a different batch composition (the two jobs may share one batch).
    assert _scores(done_b) == pytest.approx(_scores(direct.json()), abs=1e-5)
    assert done_b["result"]["predictions"][0]["class_id"] == direct.json()["predictions"][0]["class_id"]
    assert _scores(done_a) != pytest.approx(_scores(done_b), abs=1e-5)


def _scores(body: dict) -> dict[int, float]:
    predictions = body["result"]["predictions"] if "result" in body else body["predictions"]
    return {p["class_id"]: p["confidence"] for p in predictions}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

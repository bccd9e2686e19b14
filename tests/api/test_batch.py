"""Several images per request over HTTP: batches form across requests, streams, async jobs."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest

from service.app import create_app
from tests.conftest import make_settings, running_app
from tests.inprocess import bundled_model, classify_in_process

pytestmark = pytest.mark.anyio


def _batcher_stats(app) -> object:  # type: ignore[no-untyped-def]
    entry = next(e for e in app.state.dataplane.registry.entries() if e.spec.name == "digits")
    return entry.batcher.stats


async def test_concurrent_requests_form_batches_and_each_gets_its_own_answer(digit_pngs: list[bytes]) -> None:
    app = create_app(make_settings(max_batch_size=16))
    images = digit_pngs[:96]
    expected = [r.predictions[0].class_id for r in classify_in_process(bundled_model(), images)]
    async with running_app(app) as client:
        before = _batcher_stats(app).batches  # the warm-up batch

        async def one(png: bytes) -> int:
            r = await client.post("/api/v1/predict/upload", content=png, headers={"content-type": "image/png"})
            assert r.status_code == 200
            return r.json()["predictions"][0]["class_id"]

        got = await asyncio.gather(*(one(png) for png in images))
        stats = _batcher_stats(app)
    assert got == expected
    assert stats.max_batch > 1
    assert stats.max_batch <= 16
    assert stats.images == len(images) + 1  # + the warm-up image
    assert stats.batches - before < len(images)


async def test_stream_sends_one_event_per_image_then_done(
    client: httpx.AsyncClient, digit_pngs: list[bytes], digits: tuple[np.ndarray, np.ndarray]
) -> None:

    body = {"images": [{"image_base64": base64.b64encode(p).decode()} for p in digit_pngs[:5]]}
    body["images"].append({"image_base64": base64.b64encode(b"not an image").decode()})
    async with client.stream("POST", "/api/v1/predict/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: ") :] async for line in response.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert sorted(p["index"] for p in payloads) == list(range(6))
    by_index = {p["index"]: p for p in payloads}
    for i in range(5):
        assert by_index[i]["predictions"][0]["label"] == str(digits[1][i])
    assert by_index[5]["error"]["error"] == "INVALID_IMAGE"


async def test_async_job_round_trip_and_its_events(
    client: httpx.AsyncClient, digit_pngs: list[bytes], digits: tuple[np.ndarray, np.ndarray]
) -> None:

    submitted = await client.post(
        "/api/v1/predict/async", json={"image_base64": base64.b64encode(digit_pngs[0]).decode()}
    )
    assert submitted.status_code == 202
    job = submitted.json()
    assert job["status"] == "pending" and job["status_url"] == f"/api/v1/jobs/{job['job_id']}"
    async with client.stream("GET", f"{job['status_url']}/events") as response:
        statuses = [
            json.loads(line[len("data: ") :])["status"]
            async for line in response.aiter_lines()
            if line.startswith("data: ")
        ]
    assert statuses[-1] == "completed"
    final = (await client.get(job["status_url"])).json()
    assert final["status"] == "completed" and final["error"] is None
    assert final["result"]["predictions"][0]["label"] == str(digits[1][0])
    assert final["result"]["model_name"] == "digits"

"""Interactive requests and async jobs end to end: under a job backlog that keeps the model busy,
interactive requests are answered and every job still completes (never starved). How much latency
interactive requests keep is measured by bench/priorities.py, not asserted here."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio

JOBS = 300
INTERACTIVE = 40


def _count(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_jobs_complete_while_interactive_requests_are_answered(digit_pngs: list[bytes]) -> None:
    app = create_app(make_settings(jobs_max_queue=JOBS))
    async with running_app(app) as client:
        bodies = [{"image_base64": base64.b64encode(p).decode()} for p in digit_pngs[:JOBS]]
        job_urls: list[str] = []

        async def submit() -> None:
            for body in bodies:
                response = await client.post("/api/v1/predict/async", json=body)
                assert response.status_code == 202, response.text
                job_urls.append(response.json()["status_url"])

        async def interactive() -> list[int]:
            statuses = []
            for png in digit_pngs[-INTERACTIVE:]:
                response = await client.post(
                    "/api/v1/predict/upload", content=png, headers={"content-type": "image/png"}
                )
                statuses.append(response.status_code)
            return statuses

        submitting = asyncio.ensure_future(submit())
        while len(job_urls) < 20:  # the backlog has started
            await asyncio.sleep(0.01)
        statuses = await interactive()
        await submitting
        assert statuses == [200] * INTERACTIVE

        deadline = time.monotonic() + 120
        pending = list(job_urls)
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} of {JOBS} jobs never completed"
            states = await asyncio.gather(*(client.get(url) for url in pending))
            assert all(s.json()["status"] != "failed" for s in states)
            pending = [url for url, s in zip(pending, states, strict=True) if s.json()["status"] != "completed"]
            await asyncio.sleep(0.1)
        text = (await client.get("/metrics")).text
    # Both classes went through the same version's queue, each under its own priority.
    v1 = {"model": "digits", "version": "1"}
    assert _count(text, "ml_api_queue_wait_seconds_count", **v1, priority="background") == JOBS
    assert _count(text, "ml_api_queue_wait_seconds_count", **v1, priority="interactive") >= INTERACTIVE
    assert _count(text, "ml_api_jobs_total", outcome="completed") == JOBS

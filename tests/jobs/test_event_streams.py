"""Many clients following jobs at once: one Redis connection serves every event stream of a process,
so workers and reads keep their connections and every stream still gets its job's final state."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import pytest

from tests.jobs.conftest import RedisServer, redis_env, services

pytestmark = [pytest.mark.redis, pytest.mark.slow]
STREAMS = 120


def test_120_open_event_streams_hold_a_bounded_number_of_redis_connections(
    redis_server: RedisServer, digit_pngs: list[bytes]
) -> None:
    # Batches wait up to 0.5 s to fill, so the jobs stay unfinished while every stream is opened.
    env = redis_env(redis_server, ML_API_MAX_BATCH_WAIT_MS="500", ML_API_MAX_BATCH_SIZE="8")
    with services(env) as [service]:
        body = {"image_base64": base64.b64encode(digit_pngs[4]).decode()}
        job_ids = [
            httpx.post(f"{service.base}/api/v1/predict/async", json=body, timeout=10).json()["job_id"]
            for _ in range(STREAMS)
        ]
        finals: dict[str, str] = {}
        opened = threading.Semaphore(0)
        lock = threading.Lock()

        def follow(job_id: str) -> None:
            url = f"{service.base}/api/v1/jobs/{job_id}/events"
            with httpx.stream("GET", url, timeout=60) as response:
                opened.release()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        status = json.loads(line[6:])["status"]
                        if status in ("completed", "failed"):
                            with lock:
                                finals[job_id] = status
                            return

        threads = [threading.Thread(target=follow, args=(j,), daemon=True) for j in job_ids]
        for thread in threads:
            thread.start()
        for _ in threads:
            assert opened.acquire(timeout=30)
        with redis_server.client() as client:
            connections = len(client.client_list())
        # While the streams are open, reads and new submissions still get a connection at once.
        started = time.monotonic()
        status = httpx.get(f"{service.base}/api/v1/jobs/{job_ids[0]}", timeout=10)
        resubmitted = httpx.post(f"{service.base}/api/v1/predict/async", json=body, timeout=10)
        answered_in = time.monotonic() - started
        for thread in threads:
            thread.join(timeout=90)
    assert status.status_code == 200 and resubmitted.status_code == 202
    assert answered_in < 5
    assert connections < 40, connections  # the pool's workers and reads plus one event reader, not 120+
    assert finals == dict.fromkeys(job_ids, "completed")

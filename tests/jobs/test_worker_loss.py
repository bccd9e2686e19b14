"""A worker process dies mid-job (SIGKILL) or shuts down (SIGTERM): the job still ends with one result."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import time

import httpx
import pytest

from service.api.schemas import JobStatus
from service.jobs.codec import record_from_json
from service.jobs.redis_keys import GROUP
from tests.jobs.conftest import RedisServer, ServiceProcess, redis_env, services, wait_for_job

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# The killed worker waits up to 1 s for a fuller model batch (a real batching setting, not a test hook),
# so a lone job stays "processing" in it for about a second: a wide, deterministic window to kill it in.
SLOW_BATCH = {"ML_API_MAX_BATCH_WAIT_MS": "1000", "ML_API_MAX_BATCH_SIZE": "16"}


def consumer_of(process: ServiceProcess) -> bytes:
    return f"{socket.gethostname()}:{process.pid}".encode()


def submit(base: str, png: bytes) -> str:
    response = httpx.post(f"{base}/api/v1/predict/async", json={"image_base64": base64.b64encode(png).decode()})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_processing_in(server: RedisServer, job_id: str, worker: ServiceProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while True:
            state = client.hmget(f"ml-api:job:{job_id}", "status", "worker")
            if state == [b"processing", consumer_of(worker)]:
                return
            assert state[0] in (b"pending", b"processing"), state
            assert time.monotonic() < deadline, f"job never started in the worker: {state}"
            time.sleep(0.005)


def event_statuses(server: RedisServer, job_id: str) -> list[str]:
    with server.client() as client:
        return [json.loads(f[b"record"])["status"] for _, f in client.xrange(f"ml-api:job:{job_id}:events")]


def test_a_job_whose_worker_is_killed_mid_job_is_completed_by_another_replica_exactly_once(
    redis_server: RedisServer, digit_pngs: list[bytes]
) -> None:
    png = digit_pngs[11]
    with services(redis_env(redis_server, **SLOW_BATCH)) as [doomed]:
        job_id = submit(doomed.base, png)
        wait_processing_in(redis_server, job_id, doomed)
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.process.wait(timeout=10)
    with redis_server.client() as client:
        assert client.hget(f"ml-api:job:{job_id}", "status") == b"processing"  # it died mid-job
        assert client.hexists(f"ml-api:job:{job_id}", "final") == 0
        [entry] = client.xpending_range("ml-api:jobs:stream", GROUP, "-", "+", 10)
        assert entry["consumer"] == consumer_of(doomed)

    with services(redis_env(redis_server, ML_API_JOB_VISIBILITY_TIMEOUT_S="1")) as [survivor]:
        done = wait_for_job(survivor.base, job_id)
        sync = httpx.post(
            f"{survivor.base}/api/v1/predict", json={"image_base64": base64.b64encode(png).decode()}
        ).json()
        metrics = httpx.get(f"{survivor.base}/metrics").text
        with redis_server.client() as client:
            stored = client.hgetall(f"ml-api:job:{job_id}")
            assert client.xlen("ml-api:jobs:stream") == 0
            assert client.xpending("ml-api:jobs:stream", GROUP)["pending"] == 0
    assert 'ml_api_jobs_total{outcome="completed"} 1.0' in metrics.splitlines()
    assert "ml_api_job_duration_seconds_count 1.0" in metrics.splitlines()
    assert done["status"] == "completed"
    assert done["result"]["predictions"] == sync["predictions"]
    assert stored[b"final"] == stored[b"worker"] == consumer_of(survivor)
    assert stored[b"attempts"] == b"2"
    assert JobStatus.of(record_from_json(stored[b"record"]), "/api/v1/predict/async").model_dump(mode="json") == done
    # Exactly one final result: one terminal event, after the two attempts.
    assert event_statuses(redis_server, job_id) == ["pending", "processing", "processing", "completed"]


def test_sigterm_lets_the_running_job_finish_before_the_worker_exits(
    redis_server: RedisServer, digit_pngs: list[bytes]
) -> None:
    with services(redis_env(redis_server, **SLOW_BATCH)) as [worker]:
        job_id = submit(worker.base, digit_pngs[5])
        wait_processing_in(redis_server, job_id, worker)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0
    with redis_server.client() as client:
        stored = client.hgetall(f"ml-api:job:{job_id}")
        assert stored[b"status"] == b"completed"
        assert stored[b"final"] == consumer_of(worker)
        assert client.xlen("ml-api:jobs:stream") == 0
        assert client.xpending("ml-api:jobs:stream", GROUP)["pending"] == 0
    assert event_statuses(redis_server, job_id) == ["pending", "processing", "completed"]


def test_jobs_queued_before_a_redis_crash_are_completed_after_it_restarts(
    redis_server: RedisServer, digit_pngs: list[bytes]
) -> None:
    with services(redis_env(redis_server, **SLOW_BATCH)) as [worker]:
        # Three jobs: one batch waits for more, so all are still unfinished when Redis dies.
        job_ids = [submit(worker.base, digit_pngs[i]) for i in range(3)]
        with redis_server.client() as client:
            statuses = [client.hget(f"ml-api:job:{job_id}", "status") for job_id in job_ids]
        assert set(statuses) <= {b"pending", b"processing"}, statuses
        redis_server.kill()  # SIGKILL: only the append-only file (appendfsync always) carries the jobs over
        redis_server.start()
        finals = [wait_for_job(worker.base, job_id, timeout=60) for job_id in job_ids]
    assert [f["status"] for f in finals] == ["completed"] * 3
    with redis_server.client() as client:
        assert client.xlen("ml-api:jobs:stream") == 0

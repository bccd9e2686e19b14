"""Two service processes share one Redis: any replica serves any job, limits are counted across both."""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.jobs.conftest import RedisServer, ServiceProcess, redis_env, redis_server_running, services, wait_for_job

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MAX_BODY = 20_000


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[RedisServer]:
    with redis_server_running() as server:
        yield server


@pytest.fixture(scope="module")
def replicas(shared_redis: RedisServer) -> Iterator[list[ServiceProcess]]:
    env = redis_env(shared_redis, ML_API_MAX_BODY_BYTES=str(MAX_BODY))
    with services(env, env) as started:
        yield started


def b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def sse_events(base: str, job_id: str, timeout: float = 30.0) -> list[tuple[str, dict]]:
    """Read the job's SSE stream to its end: (event name, JobStatus) pairs."""
    events: list[tuple[str, dict]] = []
    name = ""
    with httpx.stream("GET", f"{base}/api/v1/jobs/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    return events


def test_a_job_submitted_to_one_replica_is_read_streamed_and_completed_through_the_other(
    replicas: list[ServiceProcess], digit_pngs: list[bytes]
) -> None:
    a, b = replicas
    png = digit_pngs[7]
    submitted = httpx.post(
        f"{a.base}/api/v1/predict/async",
        json={"image_base64": b64(png), "top_k": 3},
        headers={"X-Request-ID": "cross-replica-1"},
        timeout=10,
    )
    assert submitted.status_code == 202
    body = submitted.json()
    job_id = body["job_id"]
    assert body == {"job_id": job_id, "status": "pending", "status_url": f"/api/v1/jobs/{job_id}"}

    events = sse_events(b.base, job_id)
    statuses = [name for name, _ in events]
    assert statuses[-1] == "completed"
    assert statuses == [s for s in ("pending", "processing", "completed") if s in statuses]  # in order, no repeats
    assert all(data["status"] == name for name, data in events)

    via_b = httpx.get(f"{b.base}/api/v1/jobs/{job_id}", timeout=5).json()
    via_a = httpx.get(f"{a.base}/api/v1/jobs/{job_id}", timeout=5).json()
    assert via_b == via_a == events[-1][1]
    assert via_b["status"] == "completed" and via_b["error"] is None
    # The job's result is the model's answer: the same predictions the synchronous endpoint gives.
    sync = httpx.post(f"{b.base}/api/v1/predict", json={"image_base64": b64(png), "top_k": 3}, timeout=10).json()
    assert via_b["result"]["predictions"] == sync["predictions"]
    assert len(via_b["result"]["predictions"]) == 3
    assert (via_b["result"]["model_name"], via_b["result"]["model_version"]) == ("digits", "1")
    assert via_b["result"]["request_id"] == "cross-replica-1"


def test_an_idempotency_key_returns_the_same_job_from_either_replica(
    replicas: list[ServiceProcess], digit_pngs: list[bytes], shared_redis: RedisServer
) -> None:
    a, b = replicas
    payload = {"image_base64": b64(digit_pngs[3])}
    headers = {"Idempotency-Key": "order-2026-11-24-0001"}
    first = httpx.post(f"{a.base}/api/v1/predict/async", json=payload, headers=headers, timeout=10)
    second = httpx.post(f"{b.base}/api/v1/predict/async", json=payload, headers=headers, timeout=10)
    assert first.status_code == second.status_code == 202
    assert second.json()["job_id"] == first.json()["job_id"]
    other = httpx.post(
        f"{b.base}/api/v1/predict/async", json=payload, headers={"Idempotency-Key": "order-2"}, timeout=10
    )
    assert other.json()["job_id"] != first.json()["job_id"]
    done = wait_for_job(b.base, first.json()["job_id"])
    assert done["status"] == "completed"
    assert wait_for_job(a.base, other.json()["job_id"])["status"] == "completed"
    with shared_redis.client() as client:
        # No API keys configured: one tenant, "-".
        assert client.get("ml-api:idem:-:order-2026-11-24-0001") == first.json()["job_id"].encode()
        assert client.hget(f"ml-api:job:{first.json()['job_id']}", "attempts") == b"1"


def test_a_body_over_the_size_limit_is_refused_before_anything_reaches_redis(
    replicas: list[ServiceProcess], shared_redis: RedisServer
) -> None:
    a, _ = replicas
    with shared_redis.client() as client:
        deadline = time.monotonic() + 30
        while client.xlen("ml-api:jobs:stream") and time.monotonic() < deadline:  # earlier tests' jobs finish
            time.sleep(0.01)
        keys_before = sorted(client.keys("*"))
        length_before = client.xlen("ml-api:jobs:stream")
    response = httpx.post(
        f"{a.base}/api/v1/predict/async", json={"image_base64": "A" * MAX_BODY}, headers={"Idempotency-Key": "big"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "PAYLOAD_TOO_LARGE"
    with shared_redis.client() as client:
        assert sorted(client.keys("*")) == keys_before
        assert client.xlen("ml-api:jobs:stream") == length_before


def test_an_unknown_job_is_a_404_on_every_replica(replicas: list[ServiceProcess]) -> None:
    for replica in replicas:
        for path in ("", "/events"):
            response = httpx.get(f"{replica.base}/api/v1/jobs/{'f' * 32}{path}", timeout=5)
            assert response.status_code == 404
            assert response.json()["error"] == "JOB_NOT_FOUND"


def test_rate_limits_are_counted_across_replicas_sharing_redis(
    shared_redis: RedisServer, digit_pngs: list[bytes]
) -> None:
    env = redis_env(
        shared_redis,
        ML_API_RATE_LIMIT_ENABLED="true",
        ML_API_RATE_LIMITS=json.dumps({"batch": "4/minute", "default": "1000/second"}),
        ML_API_RATE_LIMIT_STORAGE_URI=f"redis://127.0.0.1:{shared_redis.port}/1",
    )
    with services(env, env) as (a, b):
        statuses = _alternate_batches(a, b, digit_pngs[0])
    assert [r.status_code for r in statuses] == [200, 200, 200, 200, 429, 429]
    assert statuses[4].json()["error"] == "RATE_LIMITED"
    assert 1 <= int(statuses[4].headers["Retry-After"]) <= 60


def _alternate_batches(a: ServiceProcess, b: ServiceProcess, png: bytes) -> list[httpx.Response]:
    """Six batch requests from one client, alternating replicas, under a shared 4/minute limit."""
    body = {"images": [{"image_base64": b64(png)}]}
    return [httpx.post(f"{r.base}/api/v1/predict/batch", json=body, timeout=10) for r in (a, b, a, b, a, b)]


def test_job_round_trip_at_idle(replicas: list[ServiceProcess], digit_pngs: list[bytes]) -> None:
    """Submit to one replica, poll the other until completed; the median is what docs/jobs.md reports."""
    a, b = replicas
    samples = []
    with httpx.Client(timeout=10) as client:
        for i in range(20):
            started = time.perf_counter()
            job_id = client.post(f"{a.base}/api/v1/predict/async", json={"image_base64": b64(digit_pngs[i])}).json()[
                "job_id"
            ]
            deadline = started + 10
            while (status := client.get(f"{b.base}/api/v1/jobs/{job_id}").json()["status"]) != "completed":
                assert status in ("pending", "processing") and time.perf_counter() < deadline
                time.sleep(0.001)
            samples.append(time.perf_counter() - started)
    median_ms = statistics.median(samples) * 1000
    print(f"job round trip at idle: median {median_ms:.1f} ms, max {max(samples) * 1000:.1f} ms over 20")
    assert median_ms < 1000

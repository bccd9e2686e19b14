"""Redis-only semantics: reclaim after the visibility timeout, one final result, key expiry, size cap."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.errors import ImageTooLarge, Overloaded, ShuttingDown
from service.inference.results import Classification, ClassScore
from service.jobs.base import JobRequest
from service.jobs.codec import record_from_json
from service.jobs.redis_backend import RedisJobBackend
from service.jobs.redis_keys import GROUP
from tests.conftest import make_settings
from tests.jobs.conftest import RedisServer
from tests.jobs.test_backends import GatedRunner, echo, job, until_finished

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


class Counter:
    def __init__(self) -> None:
        self.finished: list[str] = []
        self.depths: list[int] = []

    def job_finished(self, outcome: str, seconds: float) -> None:
        self.finished.append(outcome)

    def jobs_waiting(self, depth: int) -> None:
        self.depths.append(depth)


def backend(server: RedisServer, **overrides: object) -> RedisJobBackend:
    options = {"concurrency": 1, "consume": True, "consumer": None, "observer": None}
    settings_overrides = {k: v for k, v in overrides.items() if k not in options}
    kwargs = {k: v for k, v in overrides.items() if k in options}
    settings = make_settings(jobs_backend="redis", redis_url=server.url, **settings_overrides)
    return RedisJobBackend(settings, **kwargs)  # type: ignore[arg-type]


def events(server: RedisServer, job_id: str) -> list[str]:
    with server.client() as client:
        return [json.loads(f[b"record"])["status"] for _, f in client.xrange(f"ml-api:job:{job_id}:events")]


async def test_a_stalled_workers_job_is_reclaimed_and_only_the_first_final_result_is_stored(
    redis_server: RedisServer,
) -> None:
    counter = Counter()
    # Worker A stalls (its runner never returns in time, and its long visibility means no claim refresh yet);
    # worker B reclaims any entry idle over 0.3 s.
    slow = GatedRunner()
    stalled = backend(redis_server, job_visibility_timeout_s=600, consumer="worker-a", observer=counter)
    rescuer = backend(redis_server, job_visibility_timeout_s=0.3, consumer="worker-b", observer=counter, consume=False)
    await stalled.start(slow)
    await rescuer.start(slow)
    submitted = await rescuer.submit(job(image=b"abc"))
    await slow.wait_started(1)

    by_b = Classification((ClassScore(0, "worker-b", 1.0),), "digits", "b", 1.0)

    async def fast(job_id: str, request: JobRequest) -> Classification:
        return by_b

    rescuer.consume = True
    await rescuer.start(fast)
    final = await until_finished(rescuer, submitted.job_id)
    assert final.result == by_b

    # A finally finishes too: its late result must not replace B's.
    slow.release.set()
    async with asyncio.timeout(10):
        while counter.finished != ["completed"] or (stalled.worker and stalled.worker.inflight):
            await asyncio.sleep(0.02)
    await stalled.close()
    await rescuer.close()

    assert counter.finished == ["completed"]  # one finished job counted, not two
    with redis_server.client() as client:
        stored = client.hgetall(f"ml-api:job:{submitted.job_id}")
        assert record_from_json(stored[b"record"]).result == by_b
        assert stored[b"final"] == b"worker-b"
        assert stored[b"worker"] == b"worker-b"
        assert stored[b"attempts"] == b"2"
        assert client.xlen("ml-api:jobs:stream") == 0
        assert client.xpending("ml-api:jobs:stream", GROUP)["pending"] == 0
    assert events(redis_server, submitted.job_id) == ["pending", "processing", "processing", "completed"]


async def test_an_image_over_the_size_limit_is_rejected_before_anything_is_enqueued(
    redis_server: RedisServer,
) -> None:
    runner = GatedRunner()
    jobs = backend(redis_server, max_body_bytes=2048, consume=False)
    await jobs.start(runner)
    try:
        with pytest.raises(ImageTooLarge) as refused:
            await jobs.submit(job(image=b"x" * 2049), idempotency_key="too-big")
        assert refused.value.code == "PAYLOAD_TOO_LARGE"
        with redis_server.client() as client:
            assert client.xlen("ml-api:jobs:stream") == 0
            assert sorted(client.keys("*")) == [b"ml-api:jobs:stream"]
        accepted = await jobs.submit(job(image=b"x" * 2048))
        with redis_server.client() as client:
            assert client.xlen("ml-api:jobs:stream") == 1
            [(_, fields)] = client.xrange("ml-api:jobs:stream")
            assert fields[b"job_id"] == accepted.job_id.encode()
            assert fields[b"image"] == b"x" * 2048  # the image travels in the stream entry
    finally:
        await jobs.close()


async def test_every_key_of_a_job_expires_ttl_after_its_last_change(redis_server: RedisServer) -> None:
    runner = GatedRunner()
    runner.release.set()
    jobs = backend(redis_server, job_ttl_s=2)
    await jobs.start(runner)
    try:
        submitted = await jobs.submit(job(), idempotency_key="expiring")
        await until_finished(jobs, submitted.job_id)
        keys = [f"ml-api:job:{submitted.job_id}", f"ml-api:job:{submitted.job_id}:events", "ml-api:idem:expiring"]
        with redis_server.client() as client:
            ttls = [client.pttl(key) for key in keys]
            assert all(1000 < ttl <= 2000 for ttl in ttls), ttls
        await asyncio.sleep(2.2)
        with redis_server.client() as client:
            assert client.exists(*keys) == 0
        assert await jobs.get(submitted.job_id) is None
    finally:
        await jobs.close()


async def test_queued_jobs_survive_a_redis_crash_with_aof(redis_server: RedisServer) -> None:
    producer = backend(redis_server, consume=False)
    await producer.start(GatedRunner())
    submitted = [await producer.submit(job(image=bytes([i]) * 10)) for i in range(3)]
    await producer.close()

    redis_server.kill()  # SIGKILL: only the append-only file (fsync always) carries the jobs over
    redis_server.start()

    runner = GatedRunner()
    runner.release.set()
    consumer = backend(redis_server)
    await consumer.start(runner)
    try:
        finals = [await until_finished(consumer, s.job_id) for s in submitted]
        assert [f.result for f in finals] == [echo(job(image=bytes([i]) * 10)) for i in range(3)]
        assert sorted(runner.started) == sorted(s.job_id for s in submitted)
    finally:
        await consumer.close()


async def test_the_consumer_rides_out_a_redis_restart(redis_server: RedisServer) -> None:
    runner = GatedRunner()
    runner.release.set()
    jobs = backend(redis_server)
    await jobs.start(runner)
    try:
        first = await jobs.submit(job())
        assert (await until_finished(jobs, first.job_id)).status == "completed"
        redis_server.kill()
        # While Redis is down a submission is a retryable 503, not an internal error.
        with pytest.raises(Overloaded) as refused:
            await jobs.submit(job())
        assert refused.value.retry_after == 1
        redis_server.start()
        second = await jobs.submit(job())
        assert (await until_finished(jobs, second.job_id)).status == "completed"
        # The job finished before the crash is still there: the AOF kept it.
        assert (await jobs.get(first.job_id)).status == "completed"  # type: ignore[union-attr]
    finally:
        await jobs.close()


async def test_a_draining_worker_hands_its_job_back_and_another_runs_it_without_waiting_for_reclaim(
    redis_server: RedisServer,
) -> None:
    async def draining(job_id: str, request: JobRequest) -> Classification:
        # What the pipeline answers once this process is shutting down.
        raise ShuttingDown()

    leaving = backend(redis_server, consumer="leaving")
    await leaving.start(draining)
    submitted = await leaving.submit(job(image=b"handed-back"))
    async with asyncio.timeout(10):
        while events(redis_server, submitted.job_id) != ["pending", "processing", "pending"]:
            await asyncio.sleep(0.01)
    with redis_server.client() as client:
        assert client.xlen("ml-api:jobs:stream") == 1
        assert client.xpending("ml-api:jobs:stream", GROUP)["pending"] == 0
        assert client.hget(f"ml-api:job:{submitted.job_id}", "attempts") == b"0"
    assert (await leaving.get(submitted.job_id)).status == "pending"  # type: ignore[union-attr]

    runner = GatedRunner()
    runner.release.set()
    # The visibility timeout is long: only the hand-back (not a reclaim) can get the job to this worker in time.
    staying = backend(redis_server, consumer="staying", job_visibility_timeout_s=600)
    await staying.start(runner)
    try:
        final = await until_finished(staying, submitted.job_id, timeout=5)
        assert final.result == echo(job(image=b"handed-back"))
        assert runner.started == [submitted.job_id]  # the draining worker took no further job
    finally:
        await staying.close()
        await leaving.close()


async def test_a_malformed_stream_entry_is_dropped_and_the_next_job_still_runs(redis_server: RedisServer) -> None:
    runner = GatedRunner()
    runner.release.set()
    jobs = backend(redis_server)
    await jobs.start(runner)
    try:
        with redis_server.client() as client:
            client.xadd("ml-api:jobs:stream", {"job_id": "written-by-someone-else"})
        submitted = await jobs.submit(job())
        assert (await until_finished(jobs, submitted.job_id)).status == "completed"
        assert runner.started == [submitted.job_id]
        with redis_server.client() as client:
            assert client.xlen("ml-api:jobs:stream") == 0
            assert client.xpending("ml-api:jobs:stream", GROUP)["pending"] == 0
    finally:
        await jobs.close()

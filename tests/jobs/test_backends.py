"""Behaviour every job backend shares, run against the in-process and the Redis implementation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from service.errors import ErrorCode, ImageTooLarge, InvalidImage, Overloaded, ShuttingDown
from service.inference.results import Classification, ClassScore
from service.jobs.base import JobBackend, JobFailure, JobRecord, JobRequest
from service.jobs.memory import MemoryJobBackend
from service.jobs.redis_backend import RedisJobBackend
from tests.conftest import make_settings
from tests.jobs.conftest import redis_server_running

pytestmark = pytest.mark.anyio


def echo(request: JobRequest) -> Classification:
    """What the gated runner answers for ``request``: its size and top_k, so results are checkable."""
    return Classification((ClassScore(request.top_k, "bytes", float(len(request.image))),), "gated", "1", 0.5)


class GatedRunner:
    """A job function that holds every job until released, so tests control when jobs finish.

    The backend under test is real; this stands in for the model, whose own behaviour is tested elsewhere.
    """

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.started_event = asyncio.Event()
        self.fail_with: Exception | None = None

    async def __call__(self, job_id: str, request: JobRequest) -> Classification:
        self.started.append(job_id)
        self.started_event.set()
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return echo(request)

    async def wait_started(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.started) < count:
                self.started_event.clear()
                await self.started_event.wait()


BackendFactory = Callable[..., contextlib.AbstractAsyncContextManager[JobBackend]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def make_backend(request: pytest.FixtureRequest) -> BackendFactory:
    """Builds a started backend of the parametrised kind: ``async with make_backend(runner, ...) as backend``."""

    @contextlib.asynccontextmanager
    async def build(
        runner: GatedRunner,
        *,
        max_queue: int = 100,
        ttl_s: int = 3600,
        max_bytes: int = 10_485_760,
        max_queue_bytes: int = 256 * 1024 * 1024,
    ) -> AsyncIterator[JobBackend]:
        backend: JobBackend
        with contextlib.ExitStack() as stack:
            if request.param == "memory":
                settings = make_settings(
                    jobs_max_queue=max_queue,
                    job_ttl_s=ttl_s,
                    max_body_bytes=max_bytes,
                    jobs_max_queue_bytes=max_queue_bytes,
                )
                backend = MemoryJobBackend(settings, concurrency=1)
            else:
                server = stack.enter_context(redis_server_running())
                settings = make_settings(
                    jobs_backend="redis",
                    redis_url=server.url,
                    jobs_max_queue=max_queue,
                    job_ttl_s=ttl_s,
                    max_body_bytes=max_bytes,
                    jobs_max_queue_bytes=max_queue_bytes,
                )
                backend = RedisJobBackend(settings, concurrency=1)
            await backend.start(runner)
            try:
                yield backend
            finally:
                runner.release.set()
                await backend.close()

    return build


def job(image: bytes = b"png-bytes", top_k: int = 3, request_id: str = "req-1") -> JobRequest:
    return JobRequest(image=image, model=None, model_version=None, top_k=top_k, request_id=request_id)


async def until_finished(backend: JobBackend, job_id: str, timeout: float = 10.0) -> JobRecord:
    async with asyncio.timeout(timeout):
        async for record in backend.watch(job_id):
            if record.finished:
                return record
    raise AssertionError(f"watch({job_id}) ended before the job finished")


async def test_a_submitted_job_is_pending_until_run_then_completed_with_the_runner_result(
    make_backend: BackendFactory,
) -> None:
    runner = GatedRunner()
    async with make_backend(runner) as backend:
        request = job(image=b"x" * 123, top_k=4, request_id="req-123")
        submitted = await backend.submit(request)
        assert submitted.status == "pending"
        await runner.wait_started(1)
        processing = await backend.get(submitted.job_id)
        assert processing is not None and processing.status == "processing"
        runner.release.set()
        final = await until_finished(backend, submitted.job_id)
        assert final.status == "completed"
        assert final.result == echo(request)
        assert final.error is None
        assert final.request_id == "req-123"
        assert final.created_at == pytest.approx(submitted.created_at)
        assert final.updated_at >= final.created_at
        stored = await backend.get(submitted.job_id)
        assert stored == final


async def test_watch_yields_the_current_state_then_each_change_until_terminal(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    async with make_backend(runner) as backend:
        submitted = await backend.submit(job())
        await runner.wait_started(1)
        seen: list[str] = []

        async def collect() -> None:
            async for record in backend.watch(submitted.job_id):
                seen.append(record.status)

        watcher = asyncio.create_task(collect())
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.01)
        runner.release.set()
        async with asyncio.timeout(10):
            await watcher
        assert seen == ["processing", "completed"]
        # A finished job's watch yields its final state once and ends.
        assert [r.status async for r in backend.watch(submitted.job_id)] == ["completed"]


async def test_the_same_idempotency_key_returns_the_same_job_and_runs_it_once(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    async with make_backend(runner) as backend:
        first = await backend.submit(job(), idempotency_key="order-42")
        again = await backend.submit(job(image=b"other"), idempotency_key="order-42")
        other = await backend.submit(job(), idempotency_key="order-43")
        assert again.job_id == first.job_id
        assert other.job_id != first.job_id
        runner.release.set()
        await until_finished(backend, first.job_id)
        await until_finished(backend, other.job_id)
        after = await backend.submit(job(), idempotency_key="order-42")
        assert after.job_id == first.job_id
        assert after.status == "completed"
        assert sorted(runner.started) == sorted([first.job_id, other.job_id])


async def test_unknown_job_is_none_and_its_watch_yields_nothing(make_backend: BackendFactory) -> None:
    async with make_backend(GatedRunner()) as backend:
        assert await backend.get("0" * 32) is None
        assert [r async for r in backend.watch("0" * 32)] == []


async def test_a_runner_exception_fails_the_job_with_an_internal_error(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    runner.fail_with = RuntimeError("boom: internal detail")
    async with make_backend(runner) as backend:
        submitted = await backend.submit(job(request_id="req-boom"))
        runner.release.set()
        final = await until_finished(backend, submitted.job_id)
        assert final.status == "failed"
        assert final.result is None
        # An unexpected exception's text stays in the server log, never in the job's error.
        assert final.error == JobFailure(ErrorCode.INTERNAL_ERROR, "internal server error")
        assert final.request_id == "req-boom"


async def test_a_service_error_fails_the_job_with_its_own_code_and_message(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    runner.fail_with = InvalidImage("the bytes are not a decodable image")
    async with make_backend(runner) as backend:
        submitted = await backend.submit(job())
        runner.release.set()
        final = await until_finished(backend, submitted.job_id)
        assert (final.status, final.result) == ("failed", None)
        assert final.error == JobFailure(ErrorCode.INVALID_IMAGE, "the bytes are not a decodable image")


async def test_jobs_waiting_beyond_the_queue_bound_are_refused_with_retry_after(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    async with make_backend(runner, max_queue=3) as backend:
        running = await backend.submit(job())
        await runner.wait_started(1)  # taken by the only worker: no longer waiting
        waiting = [await backend.submit(job()) for _ in range(3)]
        with pytest.raises(Overloaded) as refused:
            await backend.submit(job())
        assert refused.value.retry_after == 1
        assert refused.value.code == "OVERLOADED"
        runner.release.set()
        finals = [await until_finished(backend, j.job_id) for j in [running, *waiting]]
        assert [f.status for f in finals] == ["completed"] * 4
        assert len(runner.started) == 4
        # Once drained, the queue takes jobs again.
        accepted = await backend.submit(job())
        assert (await until_finished(backend, accepted.job_id)).status == "completed"


async def test_a_full_queue_still_answers_a_repeated_idempotent_submission(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    async with make_backend(runner, max_queue=1) as backend:
        await backend.submit(job())
        await runner.wait_started(1)
        queued = await backend.submit(job(), idempotency_key="retry-me")
        with pytest.raises(Overloaded):
            await backend.submit(job(), idempotency_key="new-key")
        repeated = await backend.submit(job(), idempotency_key="retry-me")
        assert repeated.job_id == queued.job_id


async def test_finished_jobs_expire_after_the_ttl(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    runner.release.set()
    async with make_backend(runner, ttl_s=1) as backend:
        submitted = await backend.submit(job(), idempotency_key="ttl-key")
        final = await until_finished(backend, submitted.job_id)
        assert final.status == "completed"
        assert await backend.get(submitted.job_id) == final
        await asyncio.sleep(1.3)
        assert await backend.get(submitted.job_id) is None
        assert [r async for r in backend.watch(submitted.job_id)] == []
        # The idempotency key expired with its job: the same key now makes a new job.
        fresh = await backend.submit(job(), idempotency_key="ttl-key")
        assert fresh.job_id != submitted.job_id


async def test_an_image_over_the_size_limit_is_refused_before_it_is_queued(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    async with make_backend(runner, max_bytes=2048) as backend:
        with pytest.raises(ImageTooLarge):
            await backend.submit(job(image=b"x" * 2049))
        accepted = await backend.submit(job(image=b"x" * 2048))
        await runner.wait_started(1)
        assert runner.started == [accepted.job_id]  # the refused one never reached a worker


async def test_the_queue_is_bounded_by_image_bytes_as_well_as_by_count(make_backend: BackendFactory) -> None:
    runner = GatedRunner()
    async with make_backend(runner, max_queue=100, max_queue_bytes=5000) as backend:
        first = await backend.submit(job(image=b"x" * 3000))
        await runner.wait_started(1)  # running: its bytes still count (they are held until it finishes)
        await backend.submit(job(image=b"y" * 2000))
        with pytest.raises(Overloaded) as refused:
            await backend.submit(job(image=b"z"))
        assert refused.value.retry_after == 1
        assert "ML_API_JOBS_MAX_QUEUE_BYTES" in refused.value.message
        runner.release.set()
        await until_finished(backend, first.job_id)
        accepted = await backend.submit(job(image=b"z" * 2500))  # the first job's bytes were given back
        assert (await until_finished(backend, accepted.job_id)).status == "completed"


async def test_the_in_process_backend_finishes_accepted_jobs_when_it_closes() -> None:
    runner = GatedRunner()
    backend = MemoryJobBackend(make_settings(shutdown_grace_s=10), concurrency=1)
    await backend.start(runner)
    accepted = [await backend.submit(job(image=bytes([i]) * 10)) for i in range(3)]
    await runner.wait_started(1)
    closing = asyncio.create_task(backend.close())
    await asyncio.sleep(0.1)
    with pytest.raises(ShuttingDown):  # closing: nothing new is taken
        await backend.submit(job())
    runner.release.set()
    await closing
    finals = [await backend.get(j.job_id) for j in accepted]
    assert [f.status if f else None for f in finals] == ["completed"] * 3


async def test_jobs_still_queued_after_the_grace_period_fail_as_shutting_down() -> None:
    runner = GatedRunner()  # never released: the first job outlives the grace period
    backend = MemoryJobBackend(make_settings(shutdown_grace_s=0.2), concurrency=1)
    await backend.start(runner)
    accepted = [await backend.submit(job()) for _ in range(2)]
    await runner.wait_started(1)
    await backend.close()
    finals = [await backend.get(j.job_id) for j in accepted]
    assert [(f.status, f.error) for f in finals if f] == [
        ("failed", JobFailure(ErrorCode.SHUTTING_DOWN, "the server is shutting down"))
    ] * 2

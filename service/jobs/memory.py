"""In-process job backend: single process, lost on restart (use the Redis backend for replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import replace

from service.errors import ImageTooLarge, Overloaded, ServiceError, ShuttingDown
from service.inference.results import Classification
from service.jobs.base import (
    QUEUE_BYTES_FULL,
    QUEUE_FULL,
    JobBackend,
    JobFailure,
    JobObserver,
    JobRecord,
    JobRequest,
    JobRunner,
    JobState,
)
from service.settings import Settings

log = logging.getLogger(__name__)


class MemoryJobBackend(JobBackend):
    def __init__(self, settings: Settings, *, observer: JobObserver | None = None, concurrency: int = 4) -> None:
        self.max_queue = settings.jobs_max_queue
        self.max_queue_bytes = settings.jobs_max_queue_bytes
        self.max_bytes = settings.max_body_bytes
        self.ttl_s = settings.job_ttl_s
        self.grace_s = settings.shutdown_grace_s
        self._queued_bytes = 0
        self._closing = False
        self._concurrency = concurrency
        self._observer = observer
        self._records: OrderedDict[str, JobRecord] = OrderedDict()
        self._idempotency: dict[str, str] = {}
        # One condition for all jobs: watchers re-check their own record when any job changes.
        self._changed = asyncio.Condition()
        self._queue: asyncio.Queue[tuple[str, JobRequest]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._runner: JobRunner | None = None

    async def start(self, runner: JobRunner) -> None:
        self._runner = runner
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._workers = [asyncio.create_task(self._work(), name=f"job-worker-{i}") for i in range(self._concurrency)]

    async def close(self) -> None:
        """Refuse new jobs and finish the accepted ones within the grace period; any still unfinished then
        fail with SHUTTING_DOWN, so no client watching one waits on a job that can no longer complete."""
        self._closing = True
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.grace_s):
                    await self._queue.join()
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for record in list(self._records.values()):
            if not record.finished:
                await self._update(record, "failed", error=JobFailure.from_exception(ShuttingDown()))

    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobRecord:
        assert self._queue is not None, "start() first"
        self._expire()
        existing = self._idempotency.get(idempotency_key) if idempotency_key is not None else None
        if existing is not None and (record := self._records.get(existing)) is not None:
            return record
        if self._closing:
            raise ShuttingDown()
        size = len(request.image)
        if size > self.max_bytes:
            raise ImageTooLarge(f"the image is {size} bytes, over the {self.max_bytes}-byte limit")
        if self._queue.full():
            raise Overloaded(QUEUE_FULL)
        if self._queued_bytes + size > self.max_queue_bytes:
            raise Overloaded(QUEUE_BYTES_FULL)
        self._queued_bytes += size
        record = JobRecord(job_id=uuid.uuid4().hex, request_id=request.request_id)
        self._records[record.job_id] = record
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = record.job_id
        self._queue.put_nowait((record.job_id, request))
        self._report_depth()
        return record

    async def get(self, job_id: str) -> JobRecord | None:
        self._expire()
        return self._records.get(job_id)

    async def watch(self, job_id: str) -> AsyncIterator[JobRecord]:
        record = self._records.get(job_id)
        while record is not None:
            yield record
            if record.finished:
                return
            async with self._changed:
                await self._changed.wait_for(functools.partial(self._replaced, record))
            record = self._records.get(job_id)

    def _replaced(self, seen: JobRecord) -> bool:
        return self._records.get(seen.job_id) is not seen

    async def _update(
        self,
        record: JobRecord,
        status: JobState,
        *,
        result: Classification | None = None,
        error: JobFailure | None = None,
    ) -> JobRecord:
        updated = replace(record, status=status, result=result, error=error, updated_at=time.time())
        self._records[record.job_id] = updated
        async with self._changed:
            self._changed.notify_all()
        return updated

    async def _work(self) -> None:
        assert self._queue is not None and self._runner is not None
        while True:
            job_id, request = await self._queue.get()
            self._report_depth()
            try:
                await self._run(job_id, request)
            finally:
                self._queued_bytes -= len(request.image)
                self._queue.task_done()

    async def _run(self, job_id: str, request: JobRequest) -> None:
        assert self._runner is not None
        record = self._records.get(job_id)
        if record is None:
            return
        record = await self._update(record, "processing")
        try:
            result = await self._runner(job_id, request)
        except Exception as exc:  # a job must never take its worker down
            if not isinstance(exc, ServiceError):
                log.exception("job %s raised", job_id)
            record = await self._update(record, "failed", error=JobFailure.from_exception(exc))
        else:
            record = await self._update(record, "completed", result=result)
        if self._observer is not None:
            self._observer.job_finished(record.status, record.updated_at - record.created_at)

    def _report_depth(self) -> None:
        if self._observer is not None and self._queue is not None:
            self._observer.jobs_waiting(self._queue.qsize())

    def _expire(self) -> None:
        cutoff = time.time() - self.ttl_s
        while self._records:
            job_id, record = next(iter(self._records.items()))
            if record.created_at > cutoff or not record.finished:
                break
            del self._records[job_id]
        self._idempotency = {k: v for k, v in self._idempotency.items() if v in self._records}

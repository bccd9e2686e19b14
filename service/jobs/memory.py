"""In-process job backend: single process, lost on restart (use the Redis backend for replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator

from service.inference.errors import ImageTooLarge, Overloaded
from service.jobs.base import JobBackend, JobObserver, JobRecord, JobRequest, JobRunner


class MemoryJobBackend(JobBackend):
    def __init__(
        self,
        *,
        max_queue: int,
        ttl_s: float,
        max_bytes: int | None = None,
        concurrency: int = 4,
        observer: JobObserver | None = None,
    ) -> None:
        self.max_queue = max_queue
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._concurrency = concurrency
        self._observer = observer
        self._records: OrderedDict[str, JobRecord] = OrderedDict()
        self._idempotency: dict[str, str] = {}
        self._changed: dict[str, asyncio.Condition] = {}
        self._queue: asyncio.Queue[tuple[str, JobRequest]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._runner: JobRunner | None = None

    async def start(self, runner: JobRunner) -> None:
        self._runner = runner
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._workers = [asyncio.create_task(self._work(), name=f"job-worker-{i}") for i in range(self._concurrency)]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobRecord:
        assert self._queue is not None, "start() first"
        self._expire()
        existing = self._idempotency.get(idempotency_key) if idempotency_key is not None else None
        if existing is not None and (record := self._records.get(existing)) is not None:
            return record
        if self.max_bytes is not None and len(request.image) > self.max_bytes:
            raise ImageTooLarge(f"the image is {len(request.image)} bytes, over the {self.max_bytes}-byte limit")
        if self._queue.full():
            raise Overloaded("the job queue is full", retry_after=1)
        record = JobRecord(job_id=uuid.uuid4().hex)
        self._records[record.job_id] = record
        self._changed[record.job_id] = asyncio.Condition()
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
        condition = self._changed.get(job_id)
        if record is None or condition is None:
            return
        last = None
        while True:
            snapshot = (record.status, record.updated_at)
            if snapshot != last:
                last = snapshot
                yield JobRecord(**record.as_dict())
            if record.finished:
                return
            seen = last
            async with condition:
                await condition.wait_for(lambda seen=seen: (record.status, record.updated_at) != seen)

    async def _update(self, record: JobRecord, **changes: object) -> None:
        for key, value in changes.items():
            setattr(record, key, value)
        record.updated_at = time.time()
        condition = self._changed.get(record.job_id)
        if condition is not None:
            async with condition:
                condition.notify_all()

    async def _work(self) -> None:
        assert self._queue is not None and self._runner is not None
        while True:
            job_id, request = await self._queue.get()
            self._report_depth()
            record = self._records.get(job_id)
            if record is None:
                continue
            await self._update(record, status="processing")
            try:
                status, result, error = await self._runner(job_id, request)
            except Exception as exc:  # a job must never take its worker down
                status, result, error = (
                    "failed",
                    None,
                    {
                        "error": "INTERNAL_ERROR",
                        "message": type(exc).__name__,
                        "path": "/api/v1/predict/async",
                        "request_id": request.request_id,
                    },
                )
            await self._update(record, status=status, result=result, error=error)
            if self._observer is not None:
                self._observer.job_finished(status, record.updated_at - record.created_at)

    def _report_depth(self) -> None:
        if self._observer is not None and self._queue is not None:
            self._observer.jobs_waiting(self._queue.qsize())

    def _expire(self) -> None:
        cutoff = time.time() - self.ttl_s
        while self._records:
            job_id, record = next(iter(self._records.items()))
            if record.created_at > cutoff:
                break
            if not record.finished:
                break
            del self._records[job_id]
            self._changed.pop(job_id, None)
        self._idempotency = {k: v for k, v in self._idempotency.items() if v in self._records}

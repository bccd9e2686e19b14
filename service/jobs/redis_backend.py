"""Redis job backend: Redis Streams with one consumer group, shared by every replica.

The key scheme is ``service/jobs/redis_keys.py``, the atomic transitions ``redis_scripts.py`` and the
worker side (reading, reclaim, heartbeat) ``redis_consumer.py``; this module is the API side: submit,
read and watch jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import ImageTooLarge, Overloaded
from service.jobs.base import JobBackend, JobObserver, JobRecord, JobRequest, JobRunner
from service.jobs.codec import record_from_json, record_to_json
from service.jobs.redis_consumer import (
    TRANSIENT_ERRORS,
    JobConsumer,
    ensure_group,
    stream_entries,
    stream_fields,
    text,
    waiting,
)
from service.jobs.redis_keys import GROUP, JobKeys, consumer_name
from service.jobs.redis_scripts import JobScripts
from service.settings import Settings

log = logging.getLogger(__name__)

_STORE_UNREACHABLE = "the job store is unreachable"


class RedisJobBackend(JobBackend):
    def __init__(
        self,
        settings: Settings,
        *,
        observer: JobObserver | None = None,
        concurrency: int | None = None,
        consume: bool = True,
        prefix: str = "ml-api",
        consumer: str | None = None,
    ) -> None:
        assert settings.redis_url is not None, "ML_API_REDIS_URL is required"
        self.settings = settings
        self.ttl_ms = int(settings.job_ttl_s * 1000)
        self.max_queue = settings.jobs_max_queue
        self.max_bytes = settings.max_body_bytes
        # Enough jobs in flight to fill one model batch: the batcher then groups jobs like sync requests.
        self.concurrency = concurrency or max(1, min(settings.max_batch_size, 32))
        self.consume = consume
        self.consumer_name = consumer or consumer_name()
        self.keys = JobKeys(prefix)
        self._observer = observer
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis_url.get_secret_value(),
            decode_responses=False,
            socket_connect_timeout=5,
            health_check_interval=30,
            # Pooled connections die with a Redis restart; retrying reconnects instead of failing the call.
            # A retried submit can enqueue a second entry for the same job id: harmless, the final write is once.
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._scripts = JobScripts(self._redis)
        self.worker: JobConsumer | None = None

    async def start(self, runner: JobRunner) -> None:
        try:
            await ensure_group(self._redis, self.keys)
        except TRANSIENT_ERRORS as exc:
            # Start anyway: the consumer loop and submit create the group once Redis answers.
            log.warning("Redis unreachable at start-up (%s); jobs wait until it answers", exc)
        if self.consume:
            self.worker = JobConsumer(
                self._redis,
                self._scripts,
                self.keys,
                runner,
                name=self.consumer_name,
                concurrency=self.concurrency,
                visibility_s=self.settings.job_visibility_timeout_s,
                ttl_ms=self.ttl_ms,
                observer=self._observer,
            )
            self.worker.start()

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop(grace_s=min(self.settings.shutdown_grace_s, 10.0))
        await self._redis.aclose()

    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobRecord:
        # The HTTP body cap already applies; this guards other callers and keeps huge entries out of Redis.
        if len(request.image) > self.max_bytes:
            raise ImageTooLarge(f"the image is {len(request.image)} bytes, over the {self.max_bytes}-byte limit")
        record = JobRecord(job_id=uuid.uuid4().hex, request_id=request.request_id)
        keys = [self.keys.stream, self.keys.job(record.job_id), self.keys.events(record.job_id)]
        if idempotency_key is not None:
            keys.append(self.keys.idempotency(idempotency_key))
        args: list[Any] = [GROUP, self.max_queue, self.ttl_ms, record.job_id, record_to_json(record)]
        for name, value in stream_fields(record.job_id, request, record.created_at).items():
            args += [name, value]
        for attempt in range(3):
            try:
                kind, value = await self._scripts.submit(keys=keys, args=args)
            except TRANSIENT_ERRORS as exc:
                # 503 with Retry-After tells clients to come back; a 500 would read as a bug.
                raise Overloaded(_STORE_UNREACHABLE) from exc
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt == 2:
                    raise
                await ensure_group(self._redis, self.keys)  # the stream vanished (Redis restarted without persistence)
                continue
            if kind == b"dup":
                existing = await self.get(text(value))
                if existing is not None:
                    return existing
                # The mapping outlived its job by a moment: drop it if it still points there, then retry.
                await self._redis.delete(keys[3])
                continue
            self._report_depth(int(value))
            if kind == b"full":
                raise Overloaded("the job queue is full")
            return record
        raise Overloaded("could not enqueue the job")

    async def get(self, job_id: str) -> JobRecord | None:
        try:
            raw = await self._redis.hget(self.keys.job(job_id), "record")
        except TRANSIENT_ERRORS as exc:
            raise Overloaded(_STORE_UNREACHABLE) from exc
        return None if raw is None else record_from_json(raw)

    async def watch(self, job_id: str) -> AsyncIterator[JobRecord]:
        # The current record and the id of the last event, read atomically: reading continues after that id.
        snapshot = await self._scripts.snapshot(keys=[self.keys.job(job_id), self.keys.events(job_id)])
        if not snapshot:
            return
        raw, last_id = snapshot
        current = record_from_json(raw)
        yield current
        if current.finished:
            return
        events = self.keys.events(job_id)
        failures = 0
        while True:
            try:
                reply = await self._redis.xread({events: last_id}, count=16, block=5000)
                failures = 0
            except TRANSIENT_ERRORS:
                failures += 1
                if failures > 20:  # about 10 s of Redis being unreachable: end the stream, the client retries
                    return
                await asyncio.sleep(0.5)
                continue
            if not reply:
                # Nothing new for a while: stop if the job expired meanwhile, else keep waiting.
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    if not await self._redis.exists(self.keys.job(job_id)):
                        return
                continue
            for entry_id, fields in stream_entries(reply):
                last_id = entry_id
                record = record_from_json(fields[b"record"])
                yield record
                if record.finished:
                    return

    async def waiting(self) -> int:
        """Jobs queued and not yet taken by any worker, across all replicas."""
        return await waiting(self._redis, self.keys)

    def _report_depth(self, depth: int) -> None:
        if self._observer is not None:
            self._observer.jobs_waiting(depth)

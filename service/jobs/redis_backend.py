"""Redis job backend: Redis Streams with one consumer group, shared by every replica.

The key scheme is ``service/jobs/redis_keys.py``, the atomic transitions ``redis_scripts.py`` and the
worker side (reading, reclaim, heartbeat) ``redis_consumer.py``; this module is the API side: submit,
read and watch jobs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import ImageTooLarge, Overloaded
from service.jobs.base import QUEUE_BYTES_FULL, QUEUE_FULL, JobBackend, JobObserver, JobRecord, JobRequest, JobRunner
from service.jobs.codec import record_from_json, record_to_json
from service.jobs.redis_consumer import (
    TRANSIENT_ERRORS,
    JobConsumer,
    ensure_group,
    stream_fields,
    text,
    waiting,
)
from service.jobs.redis_events import JobEventHub
from service.jobs.redis_keys import GROUP, JobKeys, consumer_name
from service.jobs.redis_scripts import JobScripts
from service.settings import Settings

log = logging.getLogger(__name__)

_STORE_UNREACHABLE = "the job store is unreachable"
# Commands in flight at once on the shared pool: the job workers (at most 32), submissions and reads.
REDIS_CONNECTIONS = 64


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
        self.max_queue_bytes = settings.jobs_max_queue_bytes
        self.max_bytes = settings.max_body_bytes
        # Enough jobs in flight to fill one model batch: the batcher then groups jobs like sync requests.
        self.concurrency = concurrency or max(1, min(settings.max_batch_size, 32))
        self.consume = consume
        self.consumer_name = consumer or consumer_name()
        self.keys = JobKeys(prefix)
        self._observer = observer
        url = settings.redis_url.get_secret_value()
        pool = BlockingConnectionPool.from_url(
            url,
            # Bounded: a burst waits for a connection (then fails as a 503) instead of opening thousands.
            max_connections=REDIS_CONNECTIONS,
            timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
            # Pooled connections die with a Redis restart; retrying reconnects instead of failing the call.
            # A retried submit can enqueue a second entry for the same job id: harmless, the final write is once.
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._scripts = JobScripts(self._redis)
        self._events = JobEventHub(
            self._redis,
            aioredis.Redis.from_url(
                url, decode_responses=False, socket_connect_timeout=5, single_connection_client=True
            ),
        )
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
        await self._events.close()
        await self._redis.aclose()

    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobRecord:
        # The HTTP body cap already applies; this guards other callers and keeps huge entries out of Redis.
        if len(request.image) > self.max_bytes:
            raise ImageTooLarge(f"the image is {len(request.image)} bytes, over the {self.max_bytes}-byte limit")
        record = JobRecord(job_id=uuid.uuid4().hex, request_id=request.request_id)
        keys = [
            self.keys.stream,
            self.keys.queued_bytes,
            self.keys.job(record.job_id),
            self.keys.events(record.job_id),
        ]
        if idempotency_key is not None:
            keys.append(self.keys.idempotency(idempotency_key))
        args: list[Any] = [GROUP, self.max_queue, self.ttl_ms, record.job_id, record_to_json(record)]
        args += [self.max_queue_bytes, len(request.image)]
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
                await self._redis.delete(keys[4])
                continue
            self._report_depth(int(value))
            if kind == b"full":
                raise Overloaded(QUEUE_FULL)
            if kind == b"bytes":
                raise Overloaded(QUEUE_BYTES_FULL)
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
        try:
            snapshot = await self._scripts.snapshot(keys=[self.keys.job(job_id), self.keys.events(job_id)])
        except TRANSIENT_ERRORS as exc:
            raise Overloaded(_STORE_UNREACHABLE) from exc
        if not snapshot:
            return
        raw, last_id = snapshot
        current = record_from_json(raw)
        yield current
        if current.finished:
            return
        failures = 0
        async for fields in self._events.entries(self.keys.events(job_id), last_id):
            if not fields:  # nothing for a while: stop if the job expired, or Redis has been gone too long
                try:
                    if not await self._redis.exists(self.keys.job(job_id)):
                        return
                    failures = 0
                except TRANSIENT_ERRORS:
                    failures += 1
                    if failures > 2:  # the client reconnects and resumes from the job's state
                        return
                continue
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

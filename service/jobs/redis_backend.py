"""Redis job backend: Redis Streams with one consumer group, shared by every replica.

Keys (``<prefix>`` defaults to ``ml-api``):

- ``<prefix>:jobs:stream``: the work queue. One entry per job attempt holds the image bytes and
  request fields; consumer group ``workers``; each process is one consumer (``hostname:pid``).
- ``<prefix>:job:<id>``: hash with the job's JobStatus JSON (``record``), ``status``, ``attempts``,
  ``worker``, ``final`` (set once, by the first terminal write) and ``idem``.
- ``<prefix>:job:<id>:events``: a small per-job stream of JobStatus JSON, one entry per state change;
  ``watch`` (SSE) reads it with XREAD BLOCK, so any replica can stream any job and no change is missed.
- ``<prefix>:idem:<key>``: ``Idempotency-Key`` -> job id (SET NX semantics inside the submit script).

Every multi-key change is one Lua script, so a reader never sees half a transition and the
queue bound, idempotency check and enqueue are atomic across replicas. Keys expire
``job_ttl_s`` after the job's last state change. Delivery is at-least-once: an entry stays in the
group's pending list until acknowledged; a live worker refreshes its claim (XCLAIM JUSTID) while the
job runs, and every replica periodically XAUTOCLAIMs entries idle longer than the visibility timeout,
so a job whose worker died is picked up by another replica. Only the first terminal write is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.inference.errors import ImageTooLarge, Overloaded
from service.jobs.base import TERMINAL, JobBackend, JobObserver, JobRecord, JobRequest, JobRunner, JobState
from service.jobs.runner import JOB_PATH
from service.settings import Settings

log = logging.getLogger(__name__)

GROUP = "workers"
# A job that has taken down this many workers is failed rather than retried forever (poison message).
MAX_ATTEMPTS = 5
# Per-job event streams (XADD MAXLEN ~ 32 in the scripts) only need the few transitions of one job;
# the cap bounds a pathological retry loop.
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: stream, job hash, job events, [idempotency key]
# ARGV: group, max_queue, ttl_ms, job_id, pending record JSON, then the stream entry's field/value pairs.
# Returns {"dup", job_id} | {"full", waiting} | {"new", waiting}.
_SUBMIT = """
if #KEYS == 4 then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'dup', existing} end
end
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if waiting >= tonumber(ARGV[2]) then return {'full', tostring(waiting)} end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'status', 'pending', 'record', ARGV[5], 'attempts', 0)
if #KEYS == 4 then
  redis.call('HSET', KEYS[2], 'idem', KEYS[4])
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ttl)
end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 32, '*', 'record', ARGV[5])
redis.call('PEXPIRE', KEYS[3], ttl)
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], '*', unpack(fields))
return {'new', tostring(waiting + 1)}
"""

# KEYS: job hash, job events, [idempotency key]
# ARGV: processing record JSON, worker, ttl_ms, max_attempts
# Returns attempts (>= 1), -1 (job expired), -2 (already final), -3 (attempts exhausted).
_START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'completed' or status == 'failed' then return -2 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[4]) then return -3 end
redis.call('HSET', KEYS[1], 'status', 'processing', 'record', ARGV[1], 'worker', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 32, '*', 'record', ARGV[1])
local ttl = tonumber(ARGV[3])
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
return attempts
"""

# KEYS: stream, job hash, job events, [idempotency key]
# ARGV: final record JSON, status, worker, ttl_ms, group, entry id
# Acknowledges (and deletes) the entry in the same step, so a stored result never has a pending entry.
# Returns 1 when this write is the job's one final result, 0 when another worker's already is, -1 when expired.
_FINISH = """
redis.call('XACK', KEYS[1], ARGV[5], ARGV[6])
redis.call('XDEL', KEYS[1], ARGV[6])
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[2], 'final', ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[2], 'record', ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 32, '*', 'record', ARGV[1])
local ttl = tonumber(ARGV[4])
for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1
"""

# Hands a job this process will not run (it is draining) back to the queue at once, instead of leaving
# it for reclaim after the visibility timeout: a fresh entry replaces the delivered one.
# KEYS: stream, job hash, job events, [idempotency key]
# ARGV: group, delivered entry id, pending record JSON, ttl_ms, then the entry's field/value pairs.
# Returns 1 when handed back, 0 when the job already has its final result or expired.
_RELEASE = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local status = redis.call('HGET', KEYS[2], 'status')
if not status or status == 'completed' or status == 'failed' then return 0 end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], '*', unpack(fields))
if status == 'processing' then
  redis.call('HSET', KEYS[2], 'status', 'pending', 'record', ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'attempts', -1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 32, '*', 'record', ARGV[3])
end
local ttl = tonumber(ARGV[4])
for i = 2, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1
"""

# The current record and the id of the last event, read atomically: watch() continues after that id.
# KEYS: job hash, job events
_SNAPSHOT = """
local record = redis.call('HGET', KEYS[1], 'record')
if not record then return false end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {record, id}
"""


def _flatten(fields: dict[bytes, bytes]) -> list[bytes]:
    return [item for pair in fields.items() for item in pair]


def consumer_name() -> str:
    """One consumer per process: pending entries name the process that holds them."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _record(raw: bytes | str) -> JobRecord:
    return JobRecord(**json.loads(raw))


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


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
        self.visibility_s = settings.job_visibility_timeout_s
        # Enough jobs in flight to fill one model batch: the batcher then groups jobs like sync requests.
        self.concurrency = concurrency or max(1, min(settings.max_batch_size, 32))
        self.consume = consume
        self.consumer = consumer or consumer_name()
        self.stream = f"{prefix}:jobs:stream"
        self._prefix = prefix
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
        self._submit = self._redis.register_script(_SUBMIT)
        self._start = self._redis.register_script(_START)
        self._finish = self._redis.register_script(_FINISH)
        self._snapshot = self._redis.register_script(_SNAPSHOT)
        self._release = self._redis.register_script(_RELEASE)
        self._runner: JobRunner | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Set once the pipeline refuses work (this process is draining): take no more jobs.
        self._paused = False
        self._claim_cursor = "0-0"

    # keys
    def _job_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}"

    def _events_key(self, job_id: str) -> str:
        return f"{self._prefix}:job:{job_id}:events"

    def _idem_key(self, key: str) -> str:
        return f"{self._prefix}:idem:{key}"

    # lifecycle
    async def start(self, runner: JobRunner) -> None:
        self._runner = runner
        try:
            await self._ensure_group()
        except _TRANSIENT as exc:
            # Start anyway: the consumer loop and submit create the group once Redis answers.
            log.warning("Redis unreachable at start-up (%s); jobs wait until it answers", exc)
        if self.consume:
            self._loop_task = asyncio.create_task(self._consume_loop(), name="redis-job-consumer")

    async def close(self) -> None:
        """Stop taking jobs, give running ones a bounded time to finish; the rest stay pending for others."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._inflight:
            _done, still = await asyncio.wait(self._inflight, timeout=min(self.settings.shutdown_grace_s, 10.0))
            for task in still:
                task.cancel()
            if still:
                log.info("left %d unfinished job(s) un-acknowledged; another replica reclaims them", len(still))
                await asyncio.wait(still, timeout=2)
        await self._redis.aclose()

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # API side
    async def submit(self, request: JobRequest, idempotency_key: str | None = None) -> JobRecord:
        # The HTTP body cap already applies; this guards other callers and keeps huge entries out of Redis.
        if len(request.image) > self.max_bytes:
            raise ImageTooLarge(f"the image is {len(request.image)} bytes, over the {self.max_bytes}-byte limit")
        record = JobRecord(job_id=uuid.uuid4().hex)
        keys = [self.stream, self._job_key(record.job_id), self._events_key(record.job_id)]
        if idempotency_key is not None:
            keys.append(self._idem_key(idempotency_key))
        args: list[Any] = [GROUP, self.max_queue, self.ttl_ms, record.job_id, json.dumps(record.as_dict())]
        args += [
            "job_id", record.job_id,
            "image", request.image,
            "model", request.model or "",
            "model_version", request.model_version or "",
            "top_k", request.top_k,
            "request_id", request.request_id,
            "created_at", repr(record.created_at),
        ]  # fmt: skip
        for attempt in range(3):
            try:
                kind, value = await self._submit(keys=keys, args=args)
            except _TRANSIENT as exc:
                # 503 with Retry-After tells clients to come back; a 500 would read as a bug.
                raise Overloaded("the job store is unreachable", retry_after=1) from exc
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or attempt == 2:
                    raise
                await self._ensure_group()  # the stream vanished (Redis restarted without persistence)
                continue
            if kind == b"dup":
                existing = await self.get(value.decode())
                if existing is not None:
                    return existing
                # The mapping outlived its job by a moment: drop it if it still points there, then retry.
                await self._redis.delete(keys[3])
                continue
            if kind == b"full":
                self._report_depth(int(value))
                raise Overloaded("the job queue is full", retry_after=1)
            self._report_depth(int(value))
            return record
        raise Overloaded("could not enqueue the job", retry_after=1)

    async def get(self, job_id: str) -> JobRecord | None:
        try:
            raw = await self._redis.hget(self._job_key(job_id), "record")
        except _TRANSIENT as exc:
            raise Overloaded("the job store is unreachable", retry_after=1) from exc
        return None if raw is None else _record(raw)

    async def watch(self, job_id: str) -> AsyncIterator[JobRecord]:
        snapshot = await self._snapshot(keys=[self._job_key(job_id), self._events_key(job_id)])
        if not snapshot:
            return
        raw, last_id = snapshot
        current = _record(raw)
        yield current
        if current.finished:
            return
        events = self._events_key(job_id)
        failures = 0
        while True:
            try:
                reply = await self._redis.xread({events: last_id}, count=16, block=5000)
                failures = 0
            except _TRANSIENT:
                failures += 1
                if failures > 20:  # about 10 s of Redis being unreachable: end the stream, the client retries
                    return
                await asyncio.sleep(0.5)
                continue
            if not reply:
                # Nothing new for a while: stop if the job expired meanwhile, else keep waiting.
                with contextlib.suppress(*_TRANSIENT):
                    if not await self._redis.exists(self._job_key(job_id)):
                        return
                continue
            for entry_id, fields in reply[0][1]:
                last_id = entry_id
                record = _record(fields[b"record"])
                yield record
                if record.finished:
                    return

    # worker side
    async def _consume_loop(self) -> None:
        backoff = 0.1
        next_reclaim = 0.0
        reclaim_every = max(0.2, min(self.visibility_s / 2, 5.0))
        block_ms = int(max(100, min(reclaim_every, 1.0) * 1000))
        while not self._stopping:
            if self._paused:
                await asyncio.sleep(block_ms / 1000)
                continue
            try:
                free = self.concurrency - len(self._inflight)
                if free <= 0:
                    await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED, timeout=block_ms / 1000)
                    continue
                entries: list[tuple[bytes, dict[bytes, bytes]]] = []
                if time.monotonic() >= next_reclaim:
                    entries = await self._reclaim(free)
                    next_reclaim = time.monotonic() + reclaim_every
                    await self._refresh_depth()
                if not entries:
                    reply = await self._redis.xreadgroup(
                        GROUP, self.consumer, {self.stream: ">"}, count=free, block=block_ms
                    )
                    entries = reply[0][1] if reply else []
                for entry_id, fields in entries:
                    task = asyncio.create_task(self._handle(entry_id, fields), name=f"job-{entry_id!r}")
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("job stream or group missing (Redis lost its data?): recreating it")
                    with contextlib.suppress(*_TRANSIENT, ResponseError):
                        await self._ensure_group()
                else:
                    log.exception("job consumer: Redis error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except _TRANSIENT as exc:
                log.warning("job consumer: Redis unreachable (%s), retrying in %.1fs", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:  # the consumer must outlive any one bad entry or bug
                log.exception("job consumer: unexpected error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _reclaim(self, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Take over entries whose worker stopped refreshing its claim for longer than the visibility timeout."""
        reply = await self._redis.xautoclaim(
            self.stream, GROUP, self.consumer, min_idle_time=int(self.visibility_s * 1000),
            start_id=self._claim_cursor, count=count,
        )  # fmt: skip
        cursor, claimed = reply[0], reply[1]
        # Cursor 0-0 means the scan wrapped; otherwise continue from where this call stopped next time.
        self._claim_cursor = _text(cursor) or "0-0"
        entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
        for entry_id, _ in entries:
            log.info("reclaimed job entry %s after its worker went silent", entry_id.decode())
        return entries

    async def _heartbeat(self, entry_id: bytes) -> None:
        """Reset the entry's idle time while this worker is alive, so only dead workers' jobs get reclaimed."""
        interval = max(0.1, self.visibility_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(*_TRANSIENT):
                await self._redis.xclaim(self.stream, GROUP, self.consumer, 0, [entry_id], justid=True)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            await self._run_entry(entry_id, fields)
        except _TRANSIENT as exc:
            # The entry stays pending: this or another replica reclaims it after the visibility timeout.
            log.warning("job entry %s: Redis unreachable (%s); left for reclaim", entry_id.decode(), exc)
        except Exception:
            log.exception("job entry %s: unexpected error; left for reclaim", entry_id.decode())

    async def _run_entry(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        assert self._runner is not None
        try:
            job_id = fields[b"job_id"].decode()
            created_at = float(fields[b"created_at"])
            request = JobRequest(
                image=fields[b"image"],
                model=fields[b"model"].decode() or None,
                model_version=fields[b"model_version"].decode() or None,
                top_k=int(fields[b"top_k"]),
                request_id=fields[b"request_id"].decode(),
            )
        except (KeyError, ValueError):
            # Not written by this service: dropping it beats reclaiming it forever.
            log.error("job entry %s is malformed (fields %s); dropped", entry_id.decode(), sorted(fields))
            await self._ack(entry_id)
            return
        keys = [self._job_key(job_id), self._events_key(job_id)]
        idem = await self._redis.hget(keys[0], "idem")
        if idem:
            keys.append(idem.decode())
        if self._paused:  # delivered by a read that was already waiting when draining began
            await self._hand_back(entry_id, job_id, fields, keys, created_at)
            return
        processing = JobRecord(job_id=job_id, status="processing", created_at=created_at)
        attempts = await self._start(
            keys=keys, args=[json.dumps(processing.as_dict()), self.consumer, self.ttl_ms, MAX_ATTEMPTS]
        )
        if attempts in (-1, -2):  # expired, or a slower duplicate delivery of a job already finished
            await self._ack(entry_id)
            return
        if attempts == -3:
            error = self._error("INTERNAL_ERROR", f"gave up after {MAX_ATTEMPTS} attempts", request)
            await self._complete(entry_id, job_id, keys, created_at, "failed", None, error)
            return
        heartbeat = asyncio.create_task(self._heartbeat(entry_id))
        try:
            status, result, error = await self._runner(job_id, request)
        except asyncio.CancelledError:
            raise  # shutting down: leave the entry pending so another replica reclaims it
        except Exception as exc:  # a job must never take its worker down
            log.exception("job %s raised", job_id)
            status, result, error = "failed", None, self._error("INTERNAL_ERROR", type(exc).__name__, request)
        finally:
            heartbeat.cancel()
        if status == "failed" and error is not None and error.get("error") == "SHUTTING_DOWN":
            # This process is draining, not the job's fault: stop taking jobs and let another replica run it now.
            self._paused = True
            await self._hand_back(entry_id, job_id, fields, keys, created_at)
            return
        await self._complete(entry_id, job_id, keys, created_at, status, result, error)

    async def _hand_back(
        self, entry_id: bytes, job_id: str, fields: dict[bytes, bytes], keys: list[str], created_at: float
    ) -> None:
        pending = JobRecord(job_id=job_id, status="pending", created_at=created_at)
        released = await self._release(
            keys=[self.stream, *keys],
            args=[GROUP, entry_id, json.dumps(pending.as_dict()), self.ttl_ms, *_flatten(fields)],
        )
        log.info("draining: handed job %s back to the queue (%s)", job_id, "ok" if released else "already final")

    async def _complete(
        self,
        entry_id: bytes,
        job_id: str,
        keys: list[str],
        created_at: float,
        status: JobState,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> bool:
        assert status in TERMINAL
        final = JobRecord(job_id=job_id, status=status, result=result, error=error, created_at=created_at)
        won = await self._finish(
            keys=[self.stream, *keys],
            args=[json.dumps(final.as_dict()), status, self.consumer, self.ttl_ms, GROUP, entry_id],
        )
        if won == 1 and self._observer is not None:
            self._observer.job_finished(status, final.updated_at - created_at)
        return won == 1

    async def _ack(self, entry_id: bytes) -> None:
        # Deleting acknowledged entries keeps XLEN equal to unfinished jobs, which the queue bound relies on.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    @staticmethod
    def _error(code: str, message: str, request: JobRequest) -> dict[str, Any]:
        return {"error": code, "message": message, "path": JOB_PATH, "request_id": request.request_id}

    async def waiting(self) -> int:
        """Jobs queued and not yet taken by any worker, across all replicas."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, GROUP)
            length, pending = await pipe.execute()
        return int(length) - int(pending["pending"])

    async def _refresh_depth(self) -> None:
        if self._observer is not None:
            self._report_depth(await self.waiting())

    def _report_depth(self, depth: int) -> None:
        if self._observer is not None:
            self._observer.jobs_waiting(depth)

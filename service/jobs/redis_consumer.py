"""The worker side of the Redis job backend: read the stream, run jobs, reclaim dead workers' jobs.

Delivery is at-least-once: an entry stays in the group's pending list until acknowledged; a live worker
refreshes its claim (XCLAIM JUSTID, the heartbeat) while the job runs, and every replica periodically
XAUTOCLAIMs entries idle longer than the visibility timeout, so a job whose worker died is picked up by
another replica. Only the first terminal write is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import ErrorCode, ServiceError, ShuttingDown
from service.inference.results import Classification
from service.jobs.base import TERMINAL, JobFailure, JobObserver, JobRecord, JobRequest, JobRunner, JobState
from service.jobs.codec import record_to_json
from service.jobs.redis_keys import GROUP, JobKeys
from service.jobs.redis_scripts import JobScripts

log = logging.getLogger(__name__)

# A job that has taken down this many workers is failed rather than retried forever (poison message).
MAX_ATTEMPTS = 5
TRANSIENT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

Entry = tuple[bytes, dict[bytes, bytes]]


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that redis-py turned into a connection error (it closes the connection of
    a cancelled command and may report that instead), so a stopping loop does not retry forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def stream_entries(reply: Any) -> list[Entry]:
    """The entries of an XREAD/XREADGROUP reply naming one stream (bytes: the client does not decode)."""
    if not reply:
        return []
    entries: list[Entry] = reply[0][1]
    return entries


def stream_entries_by_key(reply: Any) -> dict[str, list[Entry]]:
    """The entries of an XREAD reply naming several streams, by stream name."""
    return {text(key): entries for key, entries in (reply or [])}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_fields(job_id: str, request: JobRequest, created_at: float) -> dict[str, bytes | str | int]:
    """The stream entry of one job attempt (read back by ``_parse``)."""
    return {
        "job_id": job_id,
        "image": request.image,
        "model": request.model or "",
        "model_version": request.model_version or "",
        "top_k": request.top_k,
        "request_id": request.request_id,
        "created_at": repr(created_at),
    }


@dataclass(frozen=True)
class _Job:
    entry_id: bytes
    job_id: str
    request: JobRequest
    created_at: float
    fields: dict[bytes, bytes]
    keys: list[str]

    @property
    def size(self) -> int:
        return len(self.request.image)


class JobConsumer:
    """Runs up to ``concurrency`` jobs at once for this process (consumer ``name`` in the group)."""

    def __init__(
        self,
        redis: Redis,
        scripts: JobScripts,
        keys: JobKeys,
        runner: JobRunner,
        *,
        name: str,
        concurrency: int,
        visibility_s: float,
        ttl_ms: int,
        observer: JobObserver | None = None,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._runner = runner
        self.name = name
        self.concurrency = concurrency
        self.visibility_s = visibility_s
        self.ttl_ms = ttl_ms
        self._observer = observer
        self.inflight: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Set once the pipeline refuses work (this process is draining): take no more jobs.
        self._paused = False
        self._claim_cursor = "0-0"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="redis-job-consumer")

    async def stop(self, grace_s: float) -> None:
        """Stop taking jobs, give running ones ``grace_s`` to finish; the rest stay pending for others."""
        await self._stop_reading()
        if self.inflight:
            _done, still = await asyncio.wait(self.inflight, timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                log.info("left %d unfinished job(s) un-acknowledged; another replica reclaims them", len(still))
                await asyncio.wait(still, timeout=2)

    async def _stop_reading(self) -> None:
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        backoff = 0.1
        next_reclaim = 0.0
        reclaim_every = max(0.2, min(self.visibility_s / 2, 5.0))
        block_ms = int(max(100, min(reclaim_every, 1.0) * 1000))
        while not self._stopping:
            try:
                free = self.concurrency - len(self.inflight)
                if free <= 0:
                    await asyncio.wait(self.inflight, return_when=asyncio.FIRST_COMPLETED, timeout=block_ms / 1000)
                    continue
                entries: list[Entry] = []
                if time.monotonic() >= next_reclaim:
                    entries = await self._reclaim(free)
                    next_reclaim = time.monotonic() + reclaim_every
                    await self._refresh_depth()
                if not entries:
                    reply = await self._redis.xreadgroup(
                        GROUP, self.name, {self._keys.stream: ">"}, count=free, block=block_ms
                    )
                    entries = stream_entries(reply)
                for entry_id, fields in entries:
                    task = asyncio.create_task(self._handle(entry_id, fields), name=f"job-{entry_id!r}")
                    self.inflight.add(task)
                    task.add_done_callback(self.inflight.discard)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("job stream or group missing (Redis lost its data?): recreating it")
                    with contextlib.suppress(*TRANSIENT_ERRORS, ResponseError):
                        await ensure_group(self._redis, self._keys)
                else:
                    log.exception("job consumer: Redis error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except TRANSIENT_ERRORS as exc:
                raise_if_cancelled()
                log.warning("job consumer: Redis unreachable (%s), retrying in %.1fs", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:  # the consumer must outlive any one bad entry or bug
                log.exception("job consumer: unexpected error")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _reclaim(self, count: int) -> list[Entry]:
        """Take over entries whose worker stopped refreshing its claim for longer than the visibility timeout."""
        reply = await self._redis.xautoclaim(
            self._keys.stream, GROUP, self.name, min_idle_time=int(self.visibility_s * 1000),
            start_id=self._claim_cursor, count=count,
        )  # fmt: skip
        cursor, claimed = reply[0], reply[1]
        # Cursor 0-0 means the scan wrapped; otherwise continue from where this call stopped next time.
        self._claim_cursor = text(cursor) or "0-0"
        entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
        for entry_id, _ in entries:
            log.info("reclaimed job entry %s after its worker went silent", entry_id.decode())
        return entries

    async def _heartbeat(self, entry_id: bytes) -> None:
        """Reset the entry's idle time while this worker is alive, so only dead workers' jobs get reclaimed."""
        interval = max(0.1, self.visibility_s / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._redis.xclaim(self._keys.stream, GROUP, self.name, 0, [entry_id], justid=True)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            job = await self._parse(entry_id, fields)
            if job is not None:
                await self._run(job)
        except TRANSIENT_ERRORS as exc:
            # The entry stays pending: this or another replica reclaims it after the visibility timeout.
            log.warning("job entry %s: Redis unreachable (%s); left for reclaim", entry_id.decode(), exc)
        except Exception:
            log.exception("job entry %s: unexpected error; left for reclaim", entry_id.decode())

    async def _parse(self, entry_id: bytes, fields: dict[bytes, bytes]) -> _Job | None:
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
            await self._ack(entry_id, len(fields.get(b"image", b"")))
            return None
        keys = [self._keys.job(job_id), self._keys.events(job_id)]
        idem = await self._redis.hget(keys[0], "idem")
        if idem:
            keys.append(text(idem))
        return _Job(entry_id, job_id, request, created_at, fields, keys)

    async def _run(self, job: _Job) -> None:
        if self._paused:  # delivered to a job started before draining stopped the reads
            await self._hand_back(job)
            return
        processing = JobRecord(
            job_id=job.job_id, status="processing", request_id=job.request.request_id, created_at=job.created_at
        )
        attempts = await self._scripts.start(
            keys=job.keys, args=[record_to_json(processing), self.name, self.ttl_ms, MAX_ATTEMPTS]
        )
        if attempts in (-1, -2):  # expired, or a slower duplicate delivery of a job already finished
            await self._ack(job.entry_id, job.size)
            return
        if attempts == -3:
            failure = JobFailure(ErrorCode.INTERNAL_ERROR, f"gave up after {MAX_ATTEMPTS} attempts")
            await self._complete(job, "failed", error=failure)
            return
        heartbeat = asyncio.create_task(self._heartbeat(job.entry_id))
        try:
            result = await self._runner(job.job_id, job.request)
        except asyncio.CancelledError:
            raise  # shutting down: leave the entry pending so another replica reclaims it
        except ShuttingDown:
            # This process is draining, not the job's fault: stop taking jobs and let another replica run it
            # now. The reading loop stops first, so a read already waiting cannot take the handed-back entry.
            self._paused = True
            await self._stop_reading()
            await self._hand_back(job)
            return
        except ServiceError as exc:
            await self._complete(job, "failed", error=JobFailure.from_exception(exc))
            return
        except Exception as exc:  # a job must never take its worker down
            log.exception("job %s raised", job.job_id)
            await self._complete(job, "failed", error=JobFailure.from_exception(exc))
            return
        finally:
            heartbeat.cancel()
        await self._complete(job, "completed", result=result)

    async def _hand_back(self, job: _Job) -> None:
        pending = JobRecord(job_id=job.job_id, request_id=job.request.request_id, created_at=job.created_at)
        released = await self._scripts.release(
            keys=[self._keys.stream, self._keys.queued_bytes, *job.keys],
            args=[GROUP, job.entry_id, job.size, record_to_json(pending), self.ttl_ms, *_flatten(job.fields)],
        )
        log.info("draining: handed job %s back to the queue (%s)", job.job_id, "ok" if released else "already final")

    async def _complete(
        self,
        job: _Job,
        status: JobState,
        *,
        result: Classification | None = None,
        error: JobFailure | None = None,
    ) -> None:
        assert status in TERMINAL
        final = JobRecord(
            job_id=job.job_id,
            status=status,
            result=result,
            error=error,
            request_id=job.request.request_id,
            created_at=job.created_at,
        )
        won = await self._scripts.finish(
            keys=[self._keys.stream, self._keys.queued_bytes, *job.keys],
            args=[GROUP, job.entry_id, job.size, record_to_json(final), status, self.name, self.ttl_ms],
        )
        if won == 1 and self._observer is not None:
            self._observer.job_finished(status, final.updated_at - job.created_at)

    async def _ack(self, entry_id: bytes, size: int) -> None:
        # Deleting acknowledged entries keeps XLEN equal to unfinished jobs, which the queue bound relies on.
        await self._scripts.ack(keys=[self._keys.stream, self._keys.queued_bytes], args=[GROUP, entry_id, size])

    async def _refresh_depth(self) -> None:
        if self._observer is not None:
            self._observer.jobs_waiting(await waiting(self._redis, self._keys))


async def ensure_group(redis: Redis, keys: JobKeys) -> None:
    try:
        await redis.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def waiting(redis: Redis, keys: JobKeys) -> int:
    """Jobs queued and not yet taken by any worker, across all replicas."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xlen(keys.stream)
        pipe.xpending(keys.stream, GROUP)
        length, pending = await pipe.execute()
    return int(length) - int(pending["pending"])


def _flatten(fields: dict[bytes, bytes]) -> list[bytes]:
    return [item for pair in fields.items() for item in pair]

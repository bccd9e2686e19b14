"""Every job-event stream this process serves, read over one Redis connection.

An SSE client following a job waits on that job's event stream. With one blocking XREAD per client, a
few hundred open streams would hold as many Redis connections (and a pool's worth of them would starve
the job workers). The hub instead issues one XREAD BLOCK naming every watched stream, on a connection
of its own, and hands each entry to the watchers of its stream; a new watcher wakes the blocked read
(CLIENT UNBLOCK from the shared pool) so it is included at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from service.jobs.redis_consumer import TRANSIENT_ERRORS, raise_if_cancelled, stream_entries_by_key

log = logging.getLogger(__name__)

# How long one read blocks when nothing arrives; watchers re-check that their job still exists this often.
BLOCK_MS = 5000
_END = None


class _Watcher:
    def __init__(self, key: str, last_id: bytes | str) -> None:
        self.key = key
        self.last_id = last_id
        self.entries: asyncio.Queue[dict[bytes, bytes] | None] = asyncio.Queue()


class JobEventHub:
    def __init__(self, redis: aioredis.Redis, reader: aioredis.Redis) -> None:
        self._redis = redis  # the shared pool: wake-ups and existence checks
        self._reader = reader  # one connection, used only by the hub's blocking reads
        self._watchers: defaultdict[str, set[_Watcher]] = defaultdict(set)
        self._changed = asyncio.Event()
        self._reader_id: int | None = None
        self._blocked = False
        self._task: asyncio.Task[None] | None = None

    @property
    def watching(self) -> int:
        return sum(len(watchers) for watchers in self._watchers.values())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.entries.put_nowait(_END)
        await self._reader.aclose()

    async def entries(self, key: str, after: bytes | str) -> AsyncIterator[dict[bytes, bytes]]:
        """The entries of stream ``key`` after id ``after``, as they arrive; ends when the hub closes.

        Every ``BLOCK_MS`` without an entry it yields an empty dict, so the caller can decide to stop.
        """
        watcher = _Watcher(key, after)
        self._watchers[key].add(watcher)
        self._start()
        await self._wake()
        try:
            while True:
                try:
                    async with asyncio.timeout(BLOCK_MS / 1000):
                        entry = await watcher.entries.get()
                except TimeoutError:
                    yield {}
                    continue
                if entry is _END:
                    return
                yield entry
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[key]

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_loop(), name="job-event-hub")

    async def _wake(self) -> None:
        self._changed.set()
        # The read may be sent but not yet blocking when the first UNBLOCK arrives: try again briefly until
        # the loop has seen the change (it clears the flag before its next read).
        for _ in range(5):
            if not (self._blocked and self._changed.is_set() and self._reader_id is not None):
                return
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self._redis.client_unblock(self._reader_id)
            await asyncio.sleep(0.01)

    async def _read_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self._reader_id is None:
                    self._reader_id = int(await self._reader.client_id())
                if not self._watchers:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                self._changed.clear()
                # Each stream from the oldest position any of its watchers still needs.
                streams: dict[bytes | str | memoryview, int | bytes | str | memoryview] = {
                    key: min((w.last_id for w in ws), key=_order) for key, ws in self._watchers.items()
                }
                self._blocked = True
                try:
                    reply = await self._reader.xread(streams, count=64, block=BLOCK_MS)
                finally:
                    self._blocked = False
                for key, entries in stream_entries_by_key(reply).items():
                    for entry_id, fields in entries:
                        for watcher in list(self._watchers.get(key, ())):
                            if _order(entry_id) > _order(watcher.last_id):
                                watcher.last_id = entry_id
                                watcher.entries.put_nowait(fields)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                raise_if_cancelled()
                self._reader_id = None
                log.warning("job events: Redis unreachable (%s), retrying in %.1fs", type(exc).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)


def _order(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    millis, _, seq = text.partition("-")
    return int(millis), int(seq or 0)

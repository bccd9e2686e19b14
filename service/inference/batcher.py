"""Dynamic batching: one queue per loaded model version, feeding that version's model instances.

Each instance (a thread running the shared model, weights loaded once) takes everything queued, up to
``max_batch_size`` images, as soon as it is free: a lone request is never held back and batches form
by themselves under load (Triton's default queue delay of 0). ``max_batch_wait_ms`` trades latency
for fuller batches on GPUs. Several instances let one batch run while the next forms; their threads
come from the process's ``ThreadBudget``, so a lone batch uses every core and concurrent batches
split them.

Two priority classes share the queue: interactive requests (someone is waiting on the answer) are
taken first; background work (async jobs, shadow traffic) runs when no interactive work waits, and
is guaranteed a batch at least every ``BACKGROUND_EVERY`` batches while it does, so it is never
starved. A batch holds one class only, and a background batch at most ``max_background_batch_size``
images: a batch that has started is not pre-empted and on a CPU costs in proportion to its size, so
an interactive request must neither pay for background images beside it nor wait long behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import torch
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext

from service.errors import InferenceFailed, InferenceTimeout, Overloaded, ServiceError, ShuttingDown
from service.inference.device import ThreadBudget, lower_thread_priority
from service.inference.model import ItemResult, LoadedModel, RunOptions

log = logging.getLogger(__name__)

Outcome = ItemResult | ServiceError
RunModel = Callable[[LoadedModel, torch.Tensor, Sequence[RunOptions]], list[ItemResult]]

# While background work waits behind a steady interactive load, every this-many-th batch takes it first.
BACKGROUND_EVERY = 4


class Priority(IntEnum):
    INTERACTIVE = 0
    BACKGROUND = 1


class BatchObserver(Protocol):
    def batch_done(self, model: str, version: str, size: int, seconds: float) -> None: ...
    def queue_wait(self, model: str, version: str, priority: str, seconds: float) -> None: ...
    def queue_depth(self, model: str, version: str, priority: str, depth: int) -> None: ...


@dataclass(eq=False)
class _Item:
    tensor: torch.Tensor
    options: RunOptions
    priority: Priority
    deadline: float
    future: asyncio.Future[Outcome]
    span_context: SpanContext | None
    enqueued: float = field(default_factory=time.monotonic)
    enqueued_ns: int = field(default_factory=time.time_ns)


@dataclass
class BatcherStats:
    batches: int = 0
    images: int = 0
    max_batch: int = 0
    rejected: int = 0
    sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.max_batch = max(self.max_batch, size)
        if len(self.sizes) < 10_000:
            self.sizes.append(size)


class DynamicBatcher:
    def __init__(
        self,
        model: LoadedModel,
        *,
        tracer: trace.Tracer,
        max_batch_size: int,
        max_queue_size: int,
        max_batch_wait_s: float = 0.0,
        max_background_batch_size: int | None = None,
        instances: int = 1,
        threads: ThreadBudget | None = None,
        observer: BatchObserver | None = None,
        run: RunModel | None = None,
        niceness: int = 0,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_batch_wait_s = max_batch_wait_s
        self.max_background_batch_size = min(max_background_batch_size or max_batch_size, max_batch_size)
        self.instances = max(1, instances)
        self.stats = BatcherStats()
        self._threads = threads
        self._observer = observer
        self._tracer = tracer
        self._run_model: RunModel = run or (lambda m, batch, options: m.run(batch, options))
        self._queues: dict[Priority, deque[_Item]] = {p: deque() for p in Priority}
        self._executors = [
            ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"infer-{model.name}-{i}",
                initializer=lower_thread_priority,
                initargs=(niceness,),
            )
            for i in range(self.instances)
        ]
        # Created lazily inside the running loop (MLServer's lesson: never bind to a foreign loop).
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._busy = 0
        self._background_skipped = 0

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def idle(self) -> bool:
        return not self.queued and not self._busy

    def start(self) -> None:
        if not self._tasks:
            self._wakeup = asyncio.Event()
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._worker(executor), name=f"batcher-{self.model.name}-{i}")
                for i, executor in enumerate(self._executors)
            ]

    async def submit(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        deadline: float,
        options: RunOptions | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> list[Outcome]:
        """Queue ``tensors`` (uint8 CHW, one per image) and wait for each one's outcome, in order."""
        if self._closed:
            raise ShuttingDown()
        self.start()
        if self.queued + len(tensors) > self.max_queue_size:
            # Items of requests that timed out stay queued until a worker skips them; don't count them.
            for queue in self._queues.values():
                live = [item for item in queue if not item.future.done()]
                queue.clear()
                queue.extend(live)
        if self.queued + len(tensors) > self.max_queue_size:
            self.stats.rejected += 1
            raise Overloaded(f"the inference queue of {self.model.name}:{self.model.version} is full")
        loop = asyncio.get_running_loop()
        span_context = trace.get_current_span().get_span_context()
        options = options or RunOptions()
        items = [
            _Item(t, options, priority, deadline, loop.create_future(), span_context if span_context.is_valid else None)
            for t in tensors
        ]
        self._queues[priority].extend(items)
        self._report_depth(priority)
        assert self._wakeup is not None
        self._wakeup.set()
        timeout = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                return list(await asyncio.gather(*(i.future for i in items)))
        except TimeoutError:
            raise InferenceTimeout(f"no result within the deadline ({self.model.name})") from None
        finally:
            # Anything still queued for this request is cancelled so the workers skip it.
            for item in items:
                if not item.future.done():
                    item.future.cancel()

    async def close(self, drain_timeout: float = 0.0) -> None:
        """Refuse new work, let queued work finish for up to ``drain_timeout`` seconds, then stop."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                while not self.idle:
                    await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self._queues.values():
            for item in queue:
                if not item.future.done():
                    item.future.set_result(ShuttingDown())
            queue.clear()
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)

    def _report_depth(self, priority: Priority) -> None:
        if self._observer is not None:
            self._observer.queue_depth(
                self.model.name, self.model.version, priority.name.lower(), len(self._queues[priority])
            )

    def _take_batch(self) -> list[_Item]:
        interactive, background = self._queues[Priority.INTERACTIVE], self._queues[Priority.BACKGROUND]
        now = time.monotonic()
        self._drop_stale(interactive, now)
        self._drop_stale(background, now)
        took_background = bool(background) and (not interactive or self._background_skipped >= BACKGROUND_EVERY - 1)
        queue, limit = (
            (background, self.max_background_batch_size)
            if took_background
            else (
                interactive,
                self.max_batch_size,
            )
        )
        batch: list[_Item] = []
        while queue and len(batch) < limit:
            item = queue.popleft()
            if not self._stale(item, now):
                batch.append(item)
        self._background_skipped = 0 if took_background or not background else self._background_skipped + 1
        for priority in Priority:
            self._report_depth(priority)
        return batch

    @staticmethod
    def _stale(item: _Item, now: float) -> bool:
        """Whether ``item`` must not run: cancelled (its request timed out or went away) or past its
        deadline, which it is then answered with."""
        if item.future.done():
            return True
        if item.deadline <= now:
            item.future.set_result(InferenceTimeout("the deadline passed while queued"))
            return True
        return False

    def _drop_stale(self, queue: deque[_Item], now: float) -> None:
        """Drop the stale items at the head, so a class that looks empty is empty."""
        while queue and self._stale(queue[0], now):
            queue.popleft()

    async def _worker(self, executor: ThreadPoolExecutor) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self.queued:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_batch_wait_s > 0 and self.queued < self.max_batch_size:
                await self._wait_for_fuller_batch()
            batch = self._take_batch()
            if not batch:
                continue
            self._busy += 1
            try:
                self._record_queue_wait(batch)
                outcomes = await loop.run_in_executor(executor, self._infer, batch)
                self.stats.record(len(batch))
                for item, outcome in zip(batch, outcomes, strict=True):
                    if not item.future.done():
                        item.future.set_result(outcome)
            except Exception as exc:  # a worker must outlive any single batch
                log.exception("batch failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_result(InferenceFailed(f"inference failed: {type(exc).__name__}"))
            finally:
                self._busy -= 1
            if self.queued:  # more waiting: let another free instance start on it meanwhile
                self._wakeup.set()

    def _record_queue_wait(self, batch: list[_Item]) -> None:
        """A ``queue_wait`` span per request (child of its request span) and the wait histogram."""
        now, now_ns = time.monotonic(), time.time_ns()
        for item in batch:
            waited = now - item.enqueued
            priority = item.priority.name.lower()
            if item.span_context is None:
                if self._observer is not None:
                    self._observer.queue_wait(self.model.name, self.model.version, priority, waited)
                continue
            parent = trace.set_span_in_context(NonRecordingSpan(item.span_context))
            span = self._tracer.start_span("queue_wait", context=parent, start_time=item.enqueued_ns)
            with trace.use_span(span, end_on_exit=False):
                if self._observer is not None:
                    self._observer.queue_wait(self.model.name, self.model.version, priority, waited)
            span.end(end_time=now_ns)

    async def _wait_for_fuller_batch(self) -> None:
        assert self._wakeup is not None
        end = time.monotonic() + self.max_batch_wait_s
        while self.queued < self.max_batch_size:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()

    def _infer(self, batch: list[_Item]) -> list[Outcome]:
        links = [Link(i.span_context) for i in batch if i.span_context is not None]
        threads = self._threads.acquire() if self._threads is not None else None
        try:
            with self._tracer.start_as_current_span(
                "inference",
                links=links,
                attributes={
                    "ml_api.model": self.model.name,
                    "ml_api.model_version": self.model.version,
                    "ml_api.batch_size": len(batch),
                    **({"ml_api.threads": threads} if threads is not None else {}),
                },
            ):
                started = time.monotonic()
                outcomes = self._infer_isolating(batch)
                if self._observer is not None:
                    seconds = time.monotonic() - started
                    self._observer.batch_done(self.model.name, self.model.version, len(batch), seconds)
                return outcomes
        finally:
            if self._threads is not None:
                self._threads.release()

    def _infer_isolating(self, batch: list[_Item]) -> list[Outcome]:
        """Run ``batch``; on failure halve it, so only the items that fail on their own get an error.

        A CUDA out-of-memory error is the common case: smaller batches usually fit.
        """
        try:
            tensors = torch.stack([item.tensor for item in batch])
            return list(self._run_model(self.model, tensors, [i.options for i in batch]))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(batch) == 1:
                log.error("CUDA out of memory on a single image (%s)", self.model.name)
                return [InferenceFailed("the model ran out of GPU memory on this image")]
            log.warning("CUDA out of memory at batch %d; retrying in halves", len(batch))
        except Exception as exc:
            if len(batch) == 1:
                log.exception("inference failed on one image (%s)", self.model.name)
                return [InferenceFailed(f"inference failed: {type(exc).__name__}")]
            log.warning("batch of %d failed (%s); isolating the failing items", len(batch), exc)
        half = len(batch) // 2
        return self._infer_isolating(batch[:half]) + self._infer_isolating(batch[half:])

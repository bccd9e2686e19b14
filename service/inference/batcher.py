"""Dynamic batching: one queue and one inference thread per loaded model version.

The worker takes everything queued (up to ``max_batch_size`` images) as soon as it is free, so a
lone request is never held back and batches form by themselves under load (Triton's default
queue delay of 0). ``max_batch_wait_ms`` trades latency for fuller batches on GPUs.
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
from typing import Protocol

import torch
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext

from service.errors import InferenceFailed, InferenceTimeout, Overloaded, ServiceError, ShuttingDown
from service.inference.device import lower_thread_priority
from service.inference.model import ItemResult, LoadedModel

log = logging.getLogger(__name__)

Outcome = ItemResult | ServiceError


class BatchObserver(Protocol):
    def batch_done(self, model: str, version: str, size: int, seconds: float) -> None: ...
    def queue_wait(self, model: str, version: str, seconds: float) -> None: ...
    def queue_depth(self, model: str, version: str, depth: int) -> None: ...


@dataclass(eq=False)
class _Item:
    tensor: torch.Tensor
    top_k: int
    embed: bool
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
        observer: BatchObserver | None = None,
        run: Callable[[LoadedModel, torch.Tensor, list[int], list[bool]], list[ItemResult]] | None = None,
        niceness: int = 0,
    ) -> None:
        self.model = model
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.max_batch_wait_s = max_batch_wait_s
        self.stats = BatcherStats()
        self._observer = observer
        self._tracer = tracer
        self._run_model = run or (lambda m, batch, top_ks, embed: m.run(batch, top_ks, embed))
        self._queue: deque[_Item] = deque()
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"infer-{model.name}",
            initializer=lower_thread_priority,
            initargs=(niceness,),
        )
        # Created lazily inside the running loop (MLServer's lesson: never bind to a foreign loop).
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._busy = False

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._worker(), name=f"batcher-{self.model.name}")

    async def submit(
        self, tensors: Sequence[torch.Tensor], *, deadline: float, top_k: int = 5, embed: bool = False
    ) -> list[Outcome]:
        """Queue ``tensors`` (uint8 CHW, one per image) and wait for each one's outcome, in order."""
        if self._closed:
            raise ShuttingDown()
        self.start()
        if len(self._queue) + len(tensors) > self.max_queue_size:
            # Items of requests that timed out stay queued until the worker skips them; don't count them.
            self._queue = deque(item for item in self._queue if not item.future.done())
        if len(self._queue) + len(tensors) > self.max_queue_size:
            self.stats.rejected += 1
            raise Overloaded(f"the inference queue of {self.model.name}:{self.model.version} is full")
        loop = asyncio.get_running_loop()
        span_context = trace.get_current_span().get_span_context()
        items = [
            _Item(t, top_k, embed, deadline, loop.create_future(), span_context if span_context.is_valid else None)
            for t in tensors
        ]
        self._queue.extend(items)
        self._report_depth()
        assert self._wakeup is not None
        self._wakeup.set()
        timeout = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                return list(await asyncio.gather(*(i.future for i in items)))
        except TimeoutError:
            raise InferenceTimeout(f"no result within the deadline ({self.model.name})") from None
        finally:
            # Anything still queued for this request is cancelled so the worker skips it.
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._queue:
            if not item.future.done():
                item.future.set_result(ShuttingDown())
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _report_depth(self) -> None:
        if self._observer is not None:
            self._observer.queue_depth(self.model.name, self.model.version, len(self._queue))

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.max_batch_size:
            item = self._queue.popleft()
            if item.future.done():  # cancelled: its request timed out or went away
                continue
            if item.deadline <= now:
                item.future.set_result(InferenceTimeout("the deadline passed while queued"))
                continue
            batch.append(item)
        self._report_depth()
        return batch

    async def _worker(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.max_batch_wait_s > 0 and len(self._queue) < self.max_batch_size:
                await self._wait_for_fuller_batch()
            batch = self._take_batch()
            if not batch:
                continue
            self._busy = True
            try:
                self._record_queue_wait(batch)
                outcomes = await loop.run_in_executor(self._executor, self._infer, batch)
                self.stats.record(len(batch))
                for item, outcome in zip(batch, outcomes, strict=True):
                    if not item.future.done():
                        item.future.set_result(outcome)
            except Exception as exc:  # the worker must outlive any single batch
                log.exception("batch failed")
                for item in batch:
                    if not item.future.done():
                        item.future.set_result(InferenceFailed(f"inference failed: {type(exc).__name__}"))
            finally:
                self._busy = False

    def _record_queue_wait(self, batch: list[_Item]) -> None:
        """A ``queue_wait`` span per request (child of its request span) and the wait histogram."""
        now, now_ns = time.monotonic(), time.time_ns()
        for item in batch:
            waited = now - item.enqueued
            if item.span_context is None:
                if self._observer is not None:
                    self._observer.queue_wait(self.model.name, self.model.version, waited)
                continue
            parent = trace.set_span_in_context(NonRecordingSpan(item.span_context))
            span = self._tracer.start_span("queue_wait", context=parent, start_time=item.enqueued_ns)
            with trace.use_span(span, end_on_exit=False):
                if self._observer is not None:
                    self._observer.queue_wait(self.model.name, self.model.version, waited)
            span.end(end_time=now_ns)

    async def _wait_for_fuller_batch(self) -> None:
        assert self._wakeup is not None
        end = time.monotonic() + self.max_batch_wait_s
        while len(self._queue) < self.max_batch_size:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()

    def _infer(self, batch: list[_Item]) -> list[Outcome]:
        links = [Link(i.span_context) for i in batch if i.span_context is not None]
        with self._tracer.start_as_current_span(
            "inference",
            links=links,
            attributes={
                "ml_api.model": self.model.name,
                "ml_api.model_version": self.model.version,
                "ml_api.batch_size": len(batch),
            },
        ):
            started = time.monotonic()
            outcomes = self._infer_isolating(batch)
            if self._observer is not None:
                self._observer.batch_done(self.model.name, self.model.version, len(batch), time.monotonic() - started)
            return outcomes

    def _infer_isolating(self, batch: list[_Item]) -> list[Outcome]:
        """Run ``batch``; on failure halve it, so only the items that fail on their own get an error.

        A CUDA out-of-memory error is the common case: smaller batches usually fit.
        """
        try:
            tensors = torch.stack([item.tensor for item in batch])
            return list(self._run_model(self.model, tensors, [i.top_k for i in batch], [i.embed for i in batch]))
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

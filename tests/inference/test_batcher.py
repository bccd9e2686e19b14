"""The dynamic batcher driven directly: lone requests are not held, failures stay contained."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
import torch
from opentelemetry import trace

from service.errors import InferenceFailed, InferenceTimeout, Overloaded
from service.inference.batcher import DynamicBatcher, Priority
from service.inference.device import ThreadBudget
from service.inference.model import ItemResult, LoadedModel, RunOptions
from tests.inprocess import bundled_model

pytestmark = pytest.mark.anyio
TRACER = trace.get_tracer("tests")


def _loaded() -> LoadedModel:
    return bundled_model()


def _tensor() -> torch.Tensor:
    return torch.zeros((1, 8, 8), dtype=torch.uint8)


async def test_a_lone_request_is_not_held_back_waiting_for_a_batch() -> None:
    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=64, max_queue_size=64)
    started = time.monotonic()
    [outcome] = await batcher.submit([_tensor()], deadline=time.monotonic() + 5)
    elapsed = time.monotonic() - started
    await batcher.close()
    assert isinstance(outcome, ItemResult)
    assert batcher.stats.sizes == [1]
    assert elapsed < 1.0  # generous: the point is no waiting for 63 more images


async def test_images_not_requests_count_toward_max_batch_size() -> None:
    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=4, max_queue_size=64)
    outcomes = await batcher.submit([_tensor() for _ in range(10)], deadline=time.monotonic() + 5)
    await batcher.close()
    assert len(outcomes) == 10 and all(isinstance(o, ItemResult) for o in outcomes)
    assert max(batcher.stats.sizes) == 4
    assert sum(batcher.stats.sizes) == 10


async def test_max_batch_wait_collects_a_fuller_batch() -> None:
    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=8, max_queue_size=64, max_batch_wait_s=0.2)
    deadline = time.monotonic() + 5

    async def later(delay: float) -> None:
        await asyncio.sleep(delay)
        await batcher.submit([_tensor()], deadline=deadline)

    await asyncio.gather(*(later(0.01 * i) for i in range(4)))
    await batcher.close()
    assert batcher.stats.sizes == [4]


async def test_cuda_out_of_memory_halves_the_batch_and_retries_before_failing_anyone() -> None:
    calls: list[int] = []

    def fits_two(model: LoadedModel, batch: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        calls.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated device limit)")
        return model.run(batch, options)

    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=8, max_queue_size=64, run=fits_two)
    outcomes = await batcher.submit([_tensor() for _ in range(8)], deadline=time.monotonic() + 5)
    await batcher.close()
    assert all(isinstance(o, ItemResult) for o in outcomes)
    assert calls == [8, 4, 2, 2, 4, 2, 2]


async def test_a_failing_batch_fails_only_the_images_that_fail_alone() -> None:
    def poisoned(model: LoadedModel, batch: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        if (batch == 255).any():  # the poisoned image is all-white
            raise RuntimeError("kernel failure on this input")
        return model.run(batch, options)

    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=8, max_queue_size=64, run=poisoned)
    images = [_tensor() for _ in range(8)]
    images[5] = torch.full((1, 8, 8), 255, dtype=torch.uint8)
    outcomes = await batcher.submit(images, deadline=time.monotonic() + 5)
    await batcher.close()
    assert [type(o) for o in outcomes] == [ItemResult] * 5 + [InferenceFailed] + [ItemResult] * 2


async def test_expired_requests_are_dropped_before_inference_and_full_queue_is_refused() -> None:
    release = asyncio.Event()
    seen: list[int] = []
    loop = asyncio.get_running_loop()

    def slow(model: LoadedModel, batch: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        seen.append(batch.shape[0])
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        return model.run(batch, options)

    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=1, max_queue_size=2, run=slow)
    blocker = asyncio.create_task(batcher.submit([_tensor()], deadline=time.monotonic() + 10))
    while not seen:
        await asyncio.sleep(0.01)
    # The worker is busy: this one waits in the queue and its deadline passes there.
    with pytest.raises(InferenceTimeout):
        await batcher.submit([_tensor()], deadline=time.monotonic() + 0.1)
    queued = asyncio.create_task(batcher.submit([_tensor(), _tensor()], deadline=time.monotonic() + 10))
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded) as overloaded:
        await batcher.submit([_tensor()], deadline=time.monotonic() + 10)
    assert overloaded.value.retry_after == 1
    release.set()
    await blocker
    assert all(isinstance(o, ItemResult) for o in await queued)
    await batcher.close()
    # The expired image never reached the model: only the blocker and the two queued ones ran.
    assert sum(seen) == 3
    assert batcher.stats.rejected == 1


async def test_inference_threads_run_at_lower_priority_than_the_event_loop() -> None:
    import os
    import threading

    seen: list[int] = []

    def record_nice(model: LoadedModel, batch: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return model.run(batch, options)

    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=4, max_queue_size=8, run=record_nice, niceness=5)
    await batcher.submit([_tensor()], deadline=time.monotonic() + 5)
    await batcher.close()
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen == [min(19, loop_nice + 5)]


async def test_instances_run_batches_side_by_side_from_one_queue() -> None:
    """Two instances: while one runs a batch the other takes the next; both share the model object."""
    gate = threading.Barrier(2, timeout=10)
    running: set[int] = set()

    def both_at_once(model: LoadedModel, batch: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        running.add(threading.get_native_id())
        gate.wait()  # only returns once two batches are in flight at the same time
        return model.run(batch, options)

    batcher = DynamicBatcher(
        _loaded(), tracer=TRACER, max_batch_size=1, max_queue_size=8, run=both_at_once, instances=2
    )
    outcomes = await asyncio.gather(*(batcher.submit([_tensor()], deadline=time.monotonic() + 10) for _ in range(2)))
    await batcher.close()
    assert all(isinstance(o, ItemResult) for [o] in outcomes)
    assert len(running) == 2  # two threads, one model


async def test_interactive_work_goes_first_and_background_work_is_never_starved() -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    order: list[str] = []

    def recorded(model: LoadedModel, batch: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        order.extend("bg" if o.top_k == 2 else "fg" for o in options)
        return model.run(batch, options)

    batcher = DynamicBatcher(_loaded(), tracer=TRACER, max_batch_size=1, max_queue_size=64, run=recorded)
    deadline = time.monotonic() + 20
    first = asyncio.create_task(batcher.submit([_tensor()], deadline=deadline))  # occupies the one instance
    await asyncio.sleep(0.05)
    background = [
        asyncio.create_task(
            batcher.submit([_tensor()], deadline=deadline, options=RunOptions(top_k=2), priority=Priority.BACKGROUND)
        )
        for _ in range(2)
    ]
    interactive = [asyncio.create_task(batcher.submit([_tensor()], deadline=deadline)) for _ in range(8)]
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, *background, *interactive)
    await batcher.close()
    # Interactive first, but every BACKGROUND_EVERY-th batch serves the waiting background work.
    assert order == ["fg", "fg", "fg", "fg", "bg", "fg", "fg", "fg", "bg", "fg", "fg"]


def test_the_thread_budget_gives_a_lone_batch_every_thread_and_splits_them_under_load() -> None:
    before = torch.get_num_threads()
    try:
        budget = ThreadBudget(4)
        assert budget.acquire() == 4  # alone: every thread, the lowest latency
        assert budget.acquire() == 2  # two batches: two threads each
        assert torch.get_num_threads() == 2
        budget.release()
        assert torch.get_num_threads() == 4
        budget.release()
        fixed = ThreadBudget(4, fixed=1)
        assert (fixed.acquire(), fixed.acquire()) == (1, 1)
    finally:
        torch.set_num_threads(before)


async def test_a_batch_holds_one_priority_class_and_background_batches_are_capped() -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    batches: list[list[str]] = []

    def recorded(model: LoadedModel, batch: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        batches.append(["bg" if o.top_k == 2 else "fg" for o in options])
        return model.run(batch, options)

    batcher = DynamicBatcher(
        _loaded(), tracer=TRACER, max_batch_size=8, max_background_batch_size=3, max_queue_size=64, run=recorded
    )
    deadline = time.monotonic() + 20
    first = asyncio.create_task(batcher.submit([_tensor()], deadline=deadline))  # occupies the one instance
    await asyncio.sleep(0.05)
    seven = [_tensor() for _ in range(7)]
    jobs = batcher.submit(seven, deadline=deadline, options=RunOptions(top_k=2), priority=Priority.BACKGROUND)
    queued_jobs = asyncio.create_task(jobs)
    interactive = asyncio.create_task(batcher.submit([_tensor(), _tensor()], deadline=deadline))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(first, queued_jobs, interactive)
    await batcher.close()
    # The waiting interactive pair runs alone (not topped up with background images); then the
    # background images in batches of at most three.
    assert batches == [["fg"], ["fg", "fg"], ["bg", "bg", "bg"], ["bg", "bg", "bg"], ["bg"]]

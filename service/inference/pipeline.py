"""Image bytes to results for one resolved model version: decode, preprocess, batch, classify."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import torch
from opentelemetry import context as otel_context
from opentelemetry import trace

from service.errors import EmbeddingUnsupported, InvalidImage, Overloaded, ServiceError, ShuttingDown
from service.inference.batcher import Priority
from service.inference.device import lower_thread_priority
from service.inference.images import decode_image_sized
from service.inference.model import ItemResult, RunOptions
from service.inference.preprocess import Preprocessing
from service.inference.registry import ModelEntry, ModelRegistry
from service.inference.results import Classification, Embedding
from service.settings import Settings

log = logging.getLogger(__name__)


class PipelineObserver(Protocol):
    def image_decoded(self, seconds: float) -> None: ...
    def prediction(self, model: str, version: str, outcome: str) -> None: ...
    def inflight(self, delta: int) -> None: ...


class InferencePipeline:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        *,
        tracer: trace.Tracer,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self._tracer = tracer
        self._observer = observer
        self._decode_pool = ThreadPoolExecutor(
            max_workers=settings.decode_threads,
            thread_name_prefix="decode",
            initializer=lower_thread_priority,
            initargs=(settings.worker_niceness,),
        )
        self.accepting = True

    def deadline(self) -> float:
        return time.monotonic() + self.settings.request_timeout_s

    async def classify(
        self,
        images: Sequence[bytes],
        *,
        model: str,
        version: str,
        top_k: int = 5,
        probabilities: bool = False,
        deadline: float | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> list[Classification | ServiceError]:
        """Classify each encoded image with ``model:version``; per-image failures come back in place of results.

        Each result carries its image's size (``Classification.image_size``), read while decoding."""
        options = RunOptions(top_k=top_k, probabilities=probabilities)
        async with self._entry(model, version) as entry:
            assert entry.model is not None
            pre = entry.model.preprocessing
            decoded = await asyncio.gather(*(self._prepare(data, pre) for data in images))
            outcomes = await self._classify(
                entry, [d if isinstance(d, ServiceError) else d[0] for d in decoded], options, deadline, priority
            )
        return [
            dataclasses.replace(outcome, image_size=prepared[1])
            if isinstance(outcome, Classification) and not isinstance(prepared, ServiceError)
            else outcome
            for outcome, prepared in zip(outcomes, decoded, strict=True)
        ]

    async def classify_tensors(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        model: str,
        version: str,
        top_k: int = 5,
        probabilities: bool = False,
        deadline: float | None = None,
        priority: Priority = Priority.INTERACTIVE,
    ) -> list[Classification | ServiceError]:
        """Classify images a client has already preprocessed: uint8 CHW tensors of the model's input size."""
        options = RunOptions(top_k=top_k, probabilities=probabilities)
        async with self._entry(model, version) as entry:
            assert entry.model is not None
            pre = entry.model.preprocessing
            shape = (pre.channels, pre.crop_size, pre.crop_size)
            checked: list[torch.Tensor | ServiceError] = [
                t
                if t.dtype == torch.uint8 and tuple(t.shape) == shape
                else InvalidImage(f"a preprocessed image must be uint8 of shape {list(shape)}, not {list(t.shape)}")
                for t in tensors
            ]
            return await self._classify(entry, checked, options, deadline, priority)

    async def embed(self, image: bytes, *, model: str, version: str, deadline: float | None = None) -> Embedding:
        async with self._entry(model, version) as entry:
            assert entry.model is not None
            if not entry.model.supports_embedding:
                raise EmbeddingUnsupported(f"model {model}:{version} cannot produce embeddings")
            prepared = await self._prepare(image, entry.model.preprocessing)
            decoded = [prepared if isinstance(prepared, ServiceError) else prepared[0]]
            (outcome,), _ = await self._submit(entry, decoded, RunOptions(top_k=1, embed=True), deadline, None)
        if isinstance(outcome, ServiceError):
            raise outcome
        assert outcome.embedding is not None
        return Embedding(tuple(outcome.embedding), model, version)

    @contextlib.asynccontextmanager
    async def _entry(self, name: str, version: str) -> AsyncIterator[ModelEntry]:
        """The loaded entry, leased from decode to result: a reload never unloads it under a request."""
        if not self.accepting:
            raise ShuttingDown()
        async with self.registry.lease(name, version) as entry:
            assert entry.model is not None and entry.batcher is not None
            yield entry

    async def _classify(
        self,
        entry: ModelEntry,
        prepared: Sequence[torch.Tensor | ServiceError],
        options: RunOptions,
        deadline: float | None,
        priority: Priority | None,
    ) -> list[Classification | ServiceError]:
        outcomes, elapsed_ms = await self._submit(entry, prepared, options, deadline, priority)
        name, version = entry.spec.name, entry.spec.version
        return [
            outcome
            if isinstance(outcome, ServiceError)
            else Classification(
                tuple(outcome.predictions), name, version, round(elapsed_ms, 3), probabilities=outcome.probabilities
            )
            for outcome in outcomes
        ]

    async def _submit(
        self,
        entry: ModelEntry,
        prepared: Sequence[torch.Tensor | ServiceError],
        options: RunOptions,
        deadline: float | None,
        priority: Priority | None,
    ) -> tuple[list[ItemResult | ServiceError], float]:
        """Queue the prepared images (errors stay in place) and count every image's outcome."""
        assert entry.batcher is not None
        name, version = entry.spec.name, entry.spec.version
        tensors = [t for t in prepared if isinstance(t, torch.Tensor)]
        if self._observer is not None:
            self._observer.inflight(1)
        started = time.monotonic()
        try:
            batch_outcomes = await entry.batcher.submit(
                tensors,
                deadline=deadline or self.deadline(),
                options=options,
                priority=priority or Priority.INTERACTIVE,
            )
        except ServiceError as exc:
            for _ in tensors:
                self._count(name, version, exc)
            raise
        finally:
            if self._observer is not None:
                self._observer.inflight(-1)
        elapsed_ms = (time.monotonic() - started) * 1000
        results = iter(batch_outcomes)
        outcomes = [next(results) if isinstance(p, torch.Tensor) else p for p in prepared]
        for outcome in outcomes:
            self._count(name, version, outcome)
        return outcomes, elapsed_ms

    def _count(self, name: str, version: str, outcome: ItemResult | ServiceError) -> None:
        if self._observer is not None:
            label = outcome.code.outcome if isinstance(outcome, ServiceError) else "success"
            self._observer.prediction(name, version, label)

    async def _prepare(self, data: bytes, pre: Preprocessing) -> tuple[torch.Tensor, tuple[int, int]] | ServiceError:
        loop = asyncio.get_running_loop()
        ctx = otel_context.get_current()
        try:
            return await loop.run_in_executor(self._decode_pool, self._decode_and_preprocess, data, pre, ctx)
        except ServiceError as exc:
            return exc
        except MemoryError:
            # Every buffer is within budget, so this is the process running short, not the image being
            # hostile: that image comes back later, the rest of its batch goes on.
            log.error("out of memory decoding an image of %d bytes", len(data))
            return Overloaded("the server is short of memory; retry the image later")

    def _decode_and_preprocess(
        self, data: bytes, pre: Preprocessing, ctx: otel_context.Context
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        with self._tracer.start_as_current_span("decode", context=ctx, attributes={"ml_api.image_bytes": len(data)}):
            started = time.monotonic()
            image, size = decode_image_sized(
                data,
                max_pixels=self.settings.max_image_pixels,
                draft_size=pre.draft_size,
                max_aspect_ratio=self.settings.max_image_aspect_ratio,
                max_jpeg_scans=self.settings.max_jpeg_scans,
            )
            if self._observer is not None:
                self._observer.image_decoded(time.monotonic() - started)
        with self._tracer.start_as_current_span("preprocess", context=ctx):
            return pre.to_uint8_tensor(image, max_pixels=self.settings.max_image_pixels), size

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

"""Image bytes to results for one resolved model version: decode, preprocess, batch, classify."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Protocol

import torch
from opentelemetry import context as otel_context
from opentelemetry import trace

from service.errors import EmbeddingUnsupported, Overloaded, ServiceError, ShuttingDown
from service.inference.device import lower_thread_priority
from service.inference.images import decode_image
from service.inference.model import ItemResult
from service.inference.preprocess import Preprocessing
from service.inference.registry import ModelRegistry
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
        self, images: Sequence[bytes], *, model: str, version: str, top_k: int = 5, deadline: float | None = None
    ) -> list[Classification | ServiceError]:
        """Classify each image with ``model:version``; per-image failures come back in place of results."""
        outcomes, elapsed_ms = await self._run(images, model, version, top_k=top_k, embed=False, deadline=deadline)
        return [
            outcome
            if isinstance(outcome, ServiceError)
            else Classification(tuple(outcome.predictions), model, version, round(elapsed_ms, 3))
            for outcome in outcomes
        ]

    async def embed(self, image: bytes, *, model: str, version: str, deadline: float | None = None) -> Embedding:
        (outcome,), _ = await self._run([image], model, version, top_k=1, embed=True, deadline=deadline)
        if isinstance(outcome, ServiceError):
            raise outcome
        assert outcome.embedding is not None
        return Embedding(tuple(outcome.embedding), model, version)

    @contextmanager
    def _inflight(self) -> Iterator[None]:
        if not self.accepting:
            raise ShuttingDown()
        if self._observer is not None:
            self._observer.inflight(1)
        try:
            yield
        finally:
            if self._observer is not None:
                self._observer.inflight(-1)

    async def _run(
        self, images: Sequence[bytes], name: str, version: str, *, top_k: int, embed: bool, deadline: float | None
    ) -> tuple[list[ItemResult | ServiceError], float]:
        with self._inflight():
            deadline = deadline or self.deadline()
            entry = await self.registry.get(name, version)
            assert entry.model is not None and entry.batcher is not None
            if embed and not entry.model.supports_embedding:
                raise EmbeddingUnsupported(f"model {name}:{version} cannot produce embeddings")
            decoded = await asyncio.gather(*(self._prepare(data, entry.model.preprocessing) for data in images))
            tensors = [t for t in decoded if isinstance(t, torch.Tensor)]
            started = time.monotonic()
            try:
                batch_outcomes = await entry.batcher.submit(tensors, deadline=deadline, top_k=top_k, embed=embed)
            except ServiceError as exc:
                for _ in tensors:
                    self._count(name, version, exc)
                raise
            elapsed_ms = (time.monotonic() - started) * 1000
            results = iter(batch_outcomes)
            outcomes = [next(results) if isinstance(d, torch.Tensor) else d for d in decoded]
            for outcome in outcomes:
                self._count(name, version, outcome)
            return outcomes, elapsed_ms

    def _count(self, name: str, version: str, outcome: ItemResult | ServiceError) -> None:
        if self._observer is not None:
            label = outcome.code.outcome if isinstance(outcome, ServiceError) else "success"
            self._observer.prediction(name, version, label)

    async def _prepare(self, data: bytes, pre: Preprocessing) -> torch.Tensor | ServiceError:
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

    def _decode_and_preprocess(self, data: bytes, pre: Preprocessing, ctx: otel_context.Context) -> torch.Tensor:
        with self._tracer.start_as_current_span("decode", context=ctx, attributes={"ml_api.image_bytes": len(data)}):
            started = time.monotonic()
            image = decode_image(
                data,
                max_pixels=self.settings.max_image_pixels,
                draft_size=pre.draft_size,
                max_aspect_ratio=self.settings.max_image_aspect_ratio,
                max_jpeg_scans=self.settings.max_jpeg_scans,
            )
            if self._observer is not None:
                self._observer.image_decoded(time.monotonic() - started)
        with self._tracer.start_as_current_span("preprocess", context=ctx):
            return pre.to_uint8_tensor(image, max_pixels=self.settings.max_image_pixels)

    def close(self) -> None:
        self._decode_pool.shutdown(wait=False, cancel_futures=True)

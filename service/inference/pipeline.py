"""The inference facade the HTTP layer and job workers call: decode, preprocess, batch, classify."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from opentelemetry import context as otel_context
from opentelemetry import trace

from service.inference.device import lower_thread_priority
from service.inference.errors import EmbeddingUnsupported, InferenceError, ShuttingDown
from service.inference.images import decode_image
from service.inference.model import ItemResult
from service.inference.preprocess import Preprocessing
from service.inference.registry import ModelRegistry
from service.settings import Settings

_default_tracer = trace.get_tracer("service.inference")


class PipelineObserver(Protocol):
    def image_decoded(self, seconds: float) -> None: ...
    def prediction(self, model: str, version: str, outcome: str) -> None: ...
    def inflight(self, delta: int) -> None: ...


_OUTCOMES = {
    "INVALID_IMAGE": "invalid_image",
    "PAYLOAD_TOO_LARGE": "invalid_image",
    "INFERENCE_TIMEOUT": "timeout",
    "OVERLOADED": "overloaded",
    "SHUTTING_DOWN": "overloaded",
}


@dataclass
class BatchResult:
    model_name: str
    model_version: str
    outcomes: list[ItemResult | InferenceError]
    inference_time_ms: float

    def prediction_payload(self, result: ItemResult, request_id: str) -> dict[str, Any]:
        """The contract's PredictionResponse for one of this batch's results."""
        return {
            "predictions": [
                {"label": p.label, "class_id": p.class_id, "confidence": min(1.0, max(0.0, p.confidence))}
                for p in result.predictions
            ],
            "model_name": self.model_name,
            "model_version": self.model_version,
            "inference_time_ms": round(self.inference_time_ms, 3),
            "request_id": request_id,
        }


class InferencePipeline:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        observer: PipelineObserver | None = None,
        tracer: trace.Tracer | None = None,
    ):
        self.settings = settings
        self._tracer = tracer or _default_tracer
        self.registry = registry
        self._observer = observer
        self._decode_pool = ThreadPoolExecutor(
            max_workers=settings.decode_threads,
            thread_name_prefix="decode",
            initializer=lower_thread_priority,
            initargs=(settings.worker_niceness,),
        )
        self.draining = False
        self.inflight = 0

    @contextmanager
    def _track(self):  # type: ignore[no-untyped-def]
        if self.draining:
            raise ShuttingDown("the server is shutting down")
        self.inflight += 1
        if self._observer is not None:
            self._observer.inflight(1)
        try:
            yield
        finally:
            self.inflight -= 1
            if self._observer is not None:
                self._observer.inflight(-1)

    def deadline(self) -> float:
        return time.monotonic() + self.settings.request_timeout_s

    async def classify(
        self,
        images: Sequence[bytes],
        *,
        model: str | None = None,
        version: str | None = None,
        top_k: int = 5,
        embed: bool = False,
        deadline: float | None = None,
    ) -> BatchResult:
        """Classify each image; per-image failures come back as errors in ``outcomes``."""
        with self._track():
            deadline = deadline or self.deadline()
            name, version = self.registry.resolve(model, version)
            entry = await self.registry.get(name, version)
            assert entry.model is not None and entry.batcher is not None
            if embed and not entry.model.supports_embedding:
                raise EmbeddingUnsupported(f"model {name}:{version} cannot produce embeddings")
            decoded = await asyncio.gather(*(self._prepare(data, entry.model.preprocessing) for data in images))
            tensors = [t for t in decoded if isinstance(t, torch.Tensor)]
            started = time.monotonic()
            try:
                batch_outcomes = await entry.batcher.submit(tensors, deadline=deadline, top_k=top_k, embed=embed)
            except InferenceError as exc:
                for _ in tensors:
                    self._count(name, version, exc)
                raise
            elapsed_ms = (time.monotonic() - started) * 1000
            results = iter(batch_outcomes)
            outcomes = [next(results) if isinstance(d, torch.Tensor) else d for d in decoded]
            for outcome in outcomes:
                self._count(name, version, outcome)
            return BatchResult(name, version, outcomes, elapsed_ms)

    async def classify_one(
        self,
        image: bytes,
        *,
        model: str | None = None,
        version: str | None = None,
        top_k: int = 5,
        embed: bool = False,
        deadline: float | None = None,
    ) -> tuple[ItemResult, BatchResult]:
        """Classify one image; its own failure is raised instead of returned."""
        batch = await self.classify([image], model=model, version=version, top_k=top_k, embed=embed, deadline=deadline)
        outcome = batch.outcomes[0]
        if isinstance(outcome, InferenceError):
            raise outcome
        return outcome, batch

    def _count(self, name: str, version: str, outcome: ItemResult | InferenceError) -> None:
        if self._observer is None:
            return
        label = "success" if isinstance(outcome, ItemResult) else _OUTCOMES.get(outcome.code, "error")
        self._observer.prediction(name, version, label)

    async def _prepare(self, data: bytes, pre: Preprocessing) -> torch.Tensor | InferenceError:
        loop = asyncio.get_running_loop()
        ctx = otel_context.get_current()
        try:
            return await loop.run_in_executor(self._decode_pool, self._decode_and_preprocess, data, pre, ctx)
        except InferenceError as exc:
            return exc

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

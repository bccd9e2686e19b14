"""Shadow traffic: a share of a model's classified images, mirrored to another of its versions.

The copy starts only once the primary result exists, in a task of its own (fire and forget): the
front end sends its answer while the copy waits for its first turn on the event loop, and nothing
the copy does can delay or fail the primary request. Shadow work is the first to be shed:

- at most ``ML_API_SHADOW_MAX_INFLIGHT`` copies run at once per process; beyond, they are dropped;
- a copy is dropped, never queued, when the shadow version already has a full batch
  (``ML_API_MAX_BATCH_SIZE``) waiting, when the primary version has more than a full batch waiting
  (the pod is saturated), when the batcher refuses it, or while the server drains;
- it runs at ``Priority.BACKGROUND``, behind every interactive image of the shadow version;
- a shadow version that is not loaded is never loaded from here (outcome ``unavailable``).

``ml_api_shadow_requests_total`` counts every copy by outcome, ``ml_api_shadow_agreement_total``
compares the top-1 classes, ``ml_api_shadow_duration_seconds`` times the copies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Protocol

from service.errors import ModelNotFound, Overloaded, ServiceError, ShuttingDown
from service.inference.batcher import Priority
from service.inference.pipeline import InferencePipeline
from service.inference.registry import ModelRegistry
from service.inference.results import Classification
from service.settings import Settings

log = logging.getLogger(__name__)


class ShadowObserver(Protocol):
    def shadow_done(
        self,
        model: str,
        primary_version: str,
        shadow_version: str,
        outcome: str,
        *,
        seconds: float | None = None,
        agreed: bool | None = None,
    ) -> None: ...

    def class_predicted(self, model: str, version: str, class_id: int) -> None: ...


class ShadowMirror:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        pipeline: InferencePipeline,
        *,
        observer: ShadowObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pipeline = pipeline
        self._observer = observer
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def mirror(self, images: Sequence[bytes], outcomes: Sequence[object], model: str, version: str) -> None:
        """Mirror a share of ``images`` (classified by ``model:version`` as ``outcomes``), if the model
        has a shadow version. Returns at once; only successful primaries are mirrored."""
        target = self.registry.config.shadow.get(model)
        if target is None or target.version == version or target.rate <= 0:
            return
        for image, outcome in zip(images, outcomes, strict=True):
            if not isinstance(outcome, Classification) or not outcome.predictions:
                continue
            if self._rng.random() >= target.rate:
                continue
            reason = self._shed_reason(model, version, target.version)
            if reason is not None:
                self._done(model, version, target.version, reason)
                continue
            task = asyncio.get_running_loop().create_task(
                self._run(image, outcome, model, version, target.version), name="shadow"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Shadow copies are best effort: cancel whatever still runs."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    def _shed_reason(self, model: str, primary: str, shadow: str) -> str | None:
        if len(self._tasks) >= self.settings.shadow_max_inflight or not self.pipeline.accepting:
            return "dropped"
        entry = self.registry.loaded_entry(model, shadow)
        if entry is None or entry.batcher is None:
            return "unavailable"
        full = self.settings.max_batch_size
        primary_entry = self.registry.loaded_entry(model, primary)
        primary_waiting = primary_entry.batcher.queued if primary_entry and primary_entry.batcher else 0
        if entry.batcher.queued >= full or primary_waiting > full:
            return "dropped"
        return None

    async def _run(self, image: bytes, primary: Classification, model: str, version: str, shadow: str) -> None:
        started = time.monotonic()
        try:
            (outcome,) = await self.pipeline.classify(
                [image],
                model=model,
                version=shadow,
                top_k=1,
                deadline=time.monotonic() + self.settings.request_timeout_s,
                priority=Priority.BACKGROUND,
            )
        except (Overloaded, ShuttingDown):
            self._done(model, version, shadow, "dropped")
            return
        except ModelNotFound:  # removed by a reload meanwhile
            self._done(model, version, shadow, "unavailable")
            return
        except ServiceError as exc:
            log.warning("shadow %s:%s failed: %s", model, shadow, exc.message)
            self._done(model, version, shadow, "failed")
            return
        except Exception:  # a shadow's bug stays in the shadow
            log.exception("shadow %s:%s failed", model, shadow)
            self._done(model, version, shadow, "failed")
            return
        seconds = time.monotonic() - started
        if isinstance(outcome, Overloaded):
            self._done(model, version, shadow, "dropped")
        elif isinstance(outcome, ServiceError) or not outcome.predictions:
            self._done(model, version, shadow, "failed", seconds=seconds)
        else:
            agreed = outcome.predictions[0].class_id == primary.predictions[0].class_id
            self._done(model, version, shadow, "success", seconds=seconds, agreed=agreed)
            if self._observer is not None:
                self._observer.class_predicted(model, shadow, outcome.predictions[0].class_id)

    def _done(
        self,
        model: str,
        primary: str,
        shadow: str,
        outcome: str,
        *,
        seconds: float | None = None,
        agreed: bool | None = None,
    ) -> None:
        if self._observer is not None:
            self._observer.shadow_done(model, primary, shadow, outcome, seconds=seconds, agreed=agreed)

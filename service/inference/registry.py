"""Model registry: versions, A/B traffic split, background eager load, lazy load once."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import torch
from opentelemetry.trace import Tracer

from service.errors import ModelNotFound, ModelNotLoaded
from service.inference.batcher import BatchObserver, DynamicBatcher
from service.inference.device import ThreadBudget, instances_for, select_device, select_dtype
from service.inference.model import LoadedModel
from service.inference.sources import load_model
from service.settings import ModelSpec, Settings

log = logging.getLogger(__name__)


class LoadState(StrEnum):
    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass
class ModelEntry:
    spec: ModelSpec
    state: LoadState = LoadState.NOT_LOADED
    model: LoadedModel | None = None
    batcher: DynamicBatcher | None = None
    error: str | None = None
    load_seconds: float | None = None


class LoadObserver(Protocol):
    def model_loaded(self, name: str, version: str, loaded: bool, instances: int = 0) -> None: ...
    def device_fallback(self, fallback: bool) -> None: ...


class ModelRegistry:
    def __init__(
        self,
        settings: Settings,
        *,
        tracer: Tracer,
        threads: ThreadBudget | None = None,
        batch_observer: BatchObserver | None = None,
        load_observer: LoadObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._tracer = tracer
        self._threads = threads
        # Instances per loaded version: one per thread of the budget unless configured.
        self.instances = instances_for(settings.model_instances, threads.budget if threads is not None else 1)
        self.device = select_device(settings.device)
        self.dtype = select_dtype(settings.precision, self.device)
        self.gpu_available = torch.cuda.is_available()
        self._entries = {spec.key: ModelEntry(spec) for spec in settings.models}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._batch_observer = batch_observer
        self._load_observer = load_observer
        self._rng = rng or random.Random()
        self.startup_complete = False
        self.warmed_up = False
        self.startup_error: str | None = None
        self._startup_task: asyncio.Task[None] | None = None
        if load_observer is not None:
            load_observer.device_fallback(self.device_fallback)
            for spec in settings.models:
                load_observer.model_loaded(spec.name, spec.version, False)

    @property
    def device_fallback(self) -> bool:
        """CUDA was asked for explicitly but the process serves on the CPU."""
        return self.settings.device == "cuda" and self.device.type != "cuda"

    # Resolution -----------------------------------------------------------------------------

    def resolve(self, name: str | None, version: str | None) -> tuple[str, str]:
        """The (model, version) a request is served by: explicit, A/B split, or the newest listed."""
        name = name or self.settings.default_model
        versions = self.settings.versions_of(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not registered")
        if version is not None:
            if version not in versions:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
            return name, version
        split = self.settings.traffic_split.get(name)
        if split:
            choices = list(split)
            return name, self._rng.choices(choices, weights=[split[v] for v in choices])[0]
        return name, versions[-1]

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def traffic_weight(self, name: str, version: str) -> float | None:
        """The share of unversioned requests ``version`` gets under the A/B split, None without a split."""
        split = self.settings.traffic_split.get(name, {})
        return split[version] / sum(split.values()) if version in split else None

    @property
    def ready(self) -> bool:
        return self.startup_complete and self.warmed_up and self.startup_error is None

    @property
    def any_failed(self) -> bool:
        return any(e.state is LoadState.FAILED for e in self._entries.values())

    # Loading --------------------------------------------------------------------------------

    def start(self) -> None:
        """Load every version of the default model in the background, then warm each up."""
        self._startup_task = asyncio.get_running_loop().create_task(self._startup(), name="model-startup")

    async def wait_started(self) -> None:
        if self._startup_task is not None:
            await asyncio.shield(self._startup_task)

    async def _startup(self) -> None:
        default = self.settings.default_model
        try:
            for version in self.settings.versions_of(default):
                entry = await self._ensure_loaded(default, version)
                if entry.state is LoadState.FAILED:
                    raise RuntimeError(entry.error)
                if self.settings.warmup:
                    await self._warm_up(entry)
            self.warmed_up = True
            # Everything loaded so far (torch, the model, the app) lives as long as the process: move
            # it out of the collector's reach so full collections stop scanning it on the event loop.
            gc.freeze()
        except Exception as exc:
            self.startup_error = str(exc)
            log.error("default model failed to load: %s", exc)
        finally:
            self.startup_complete = True

    async def _warm_up(self, entry: ModelEntry) -> None:
        assert entry.batcher is not None and entry.model is not None
        pre = entry.model.preprocessing
        dummy = torch.zeros((pre.channels, pre.crop_size, pre.crop_size), dtype=torch.uint8)
        started = time.monotonic()
        await entry.batcher.submit([dummy], deadline=time.monotonic() + 600)
        log.info("warmed up %s:%s in %.3fs", entry.spec.name, entry.spec.version, time.monotonic() - started)

    async def get(self, name: str, version: str) -> ModelEntry:
        """The loaded entry for (name, version), loading it on first use (once under concurrency)."""
        entry = self._entries.get((name, version))
        if entry is None:
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        if entry.state is LoadState.LOADED:
            return entry
        entry = await self._ensure_loaded(name, version)
        if entry.state is not LoadState.LOADED:
            raise ModelNotLoaded(f"model {name}:{version} failed to load: {entry.error}")
        return entry

    async def _ensure_loaded(self, name: str, version: str) -> ModelEntry:
        entry = self._entries[(name, version)]
        lock = self._locks.setdefault((name, version), asyncio.Lock())
        async with lock:
            if entry.state in (LoadState.LOADED, LoadState.FAILED):
                return entry
            entry.state = LoadState.LOADING
            started = time.monotonic()
            try:
                model = await asyncio.to_thread(
                    load_model,
                    entry.spec,
                    self.device,
                    self.dtype,
                    channels_last=self.settings.channels_last,
                    weights_dir=self.settings.weights_dir,
                    backend_cache_dir=self.settings.backend_cache_dir,
                    threads=self._threads.budget if self._threads is not None else None,
                    max_batch_size=self.settings.max_batch_size,
                    niceness=self.settings.worker_niceness,
                )
            except Exception as exc:
                entry.state, entry.error = LoadState.FAILED, str(exc)
                log.error("failed to load %s:%s: %s", name, version, exc)
                return entry
            entry.model = model
            entry.batcher = DynamicBatcher(
                model,
                max_batch_size=self.settings.max_batch_size,
                max_queue_size=self.settings.max_queue_size,
                max_batch_wait_s=self.settings.max_batch_wait_ms / 1000,
                instances=self.instances,
                threads=self._threads,
                observer=self._batch_observer,
                tracer=self._tracer,
                niceness=self.settings.worker_niceness,
            )
            entry.load_seconds = time.monotonic() - started
            entry.state = LoadState.LOADED
            if self._load_observer is not None:
                self._load_observer.model_loaded(name, version, True, self.instances)
            log.info("loaded %s:%s on %s in %.2fs", name, version, self.device, entry.load_seconds)
            return entry

    async def close(self, drain_timeout: float = 0.0) -> None:
        if self._startup_task is not None and not self._startup_task.done():
            self._startup_task.cancel()
        for entry in self._entries.values():
            if entry.batcher is not None:
                await entry.batcher.close(drain_timeout)

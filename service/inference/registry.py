"""Model registry: versions, A/B traffic split, background eager load, lazy load once.

The served set (``config`` and its entries) can be replaced while serving (``install``, driven by
``service.inference.reload``): resolution and lookups read whichever set is current, requests hold a
lease on the entry they use, and an entry taken out of service is unloaded once nothing uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import torch
from opentelemetry.trace import Tracer

from service.errors import ModelNotFound, ModelNotLoaded
from service.inference.batcher import BatchObserver, DynamicBatcher
from service.inference.device import ThreadBudget, instances_for, select_device, select_dtype
from service.inference.memory import release_memory
from service.inference.model import LoadedModel
from service.inference.model_config import ModelConfig
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
    # Model operations: requests using the entry right now (decode to result), whether a reload has
    # taken it out of service, and the lock that makes a load happen once.
    leases: int = 0
    retired: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)


class VersionRetired(ModelNotFound):
    """The version was taken out of service by a reload after the request had resolved it."""


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
        # The served set: replaced as a whole by install(), never edited in place.
        self.config = ModelConfig.of_settings(settings)
        self.generation = 1
        self._entries = {spec.key: ModelEntry(spec) for spec in self.config.models}
        self._retiring: list[ModelEntry] = []
        self._frozen = False
        self._batch_observer = batch_observer
        self._load_observer = load_observer
        self._rng = rng or random.Random()
        self.startup_complete = False
        self.warmed_up = False
        self.startup_error: str | None = None
        self._startup_task: asyncio.Task[None] | None = None
        self._shadow_task: asyncio.Task[None] | None = None
        if load_observer is not None:
            load_observer.device_fallback(self.device_fallback)
            for spec in self.config.models:
                load_observer.model_loaded(spec.name, spec.version, False)

    @property
    def device_fallback(self) -> bool:
        """CUDA was asked for explicitly but the process serves on the CPU."""
        return self.settings.device == "cuda" and self.device.type != "cuda"

    # Resolution -----------------------------------------------------------------------------

    def resolve(self, name: str | None, version: str | None) -> tuple[str, str]:
        """The (model, version) a request is served by: explicit, A/B split, or the newest listed that
        is not a shadow version (those get mirrored copies, or requests naming them)."""
        config = self.config  # one set for the whole resolution, even if a reload installs another
        name = name or config.default_model
        versions = config.versions_of(name)
        if not versions:
            raise ModelNotFound(f"model {name!r} is not registered")
        if version is not None:
            if version not in versions:
                raise ModelNotFound(f"model {name!r} has no version {version!r}")
            return name, version
        split = config.traffic_split.get(name)
        if split:
            choices = list(split)
            return name, self._rng.choices(choices, weights=[split[v] for v in choices])[0]
        return name, config.serving_versions(name)[-1]

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def traffic_weight(self, name: str, version: str) -> float | None:
        """The share of unversioned requests ``version`` gets under the A/B split, None without a split."""
        split = self.config.traffic_split.get(name, {})
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
        default = self.config.default_model
        try:
            for version in self.config.serving_versions(default):
                entry = await self._ensure_loaded(default, version)
                if entry.state is LoadState.FAILED:
                    raise RuntimeError(entry.error)
                if self.settings.warmup:
                    await self.warm_up(entry)
            self.warmed_up = True
            # Everything loaded so far (torch, the model, the app) lives as long as the process: move
            # it out of the collector's reach so full collections stop scanning it on the event loop.
            gc.freeze()
            self._frozen = True
        except Exception as exc:
            self.startup_error = str(exc)
            log.error("default model failed to load: %s", exc)
        finally:
            self.startup_complete = True
        if self.startup_error is None and self.config.shadow:
            # After readiness: a shadow candidate that cannot load must not keep the service down.
            self._shadow_task = asyncio.get_running_loop().create_task(self._load_shadows(), name="shadow-load")

    async def _load_shadows(self) -> None:
        for name, target in self.config.shadow.items():
            entry = self._entries.get((name, target.version))
            if entry is None or entry.state is not LoadState.NOT_LOADED:
                continue
            try:
                entry = await self.load_entry(entry)  # a failure is logged and kept on the entry
                if entry.state is LoadState.LOADED and self.settings.warmup and not entry.retired:
                    await self.warm_up(entry)
            except Exception as exc:  # e.g. retired by a reload while warming up
                log.warning("shadow version %s:%s not warmed up: %s", name, target.version, exc)

    async def warm_up(self, entry: ModelEntry) -> None:
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
            if any(e.spec.key == (name, version) for e in self._retiring):
                raise VersionRetired(f"model {name!r} version {version!r} was removed by a configuration reload")
            raise ModelNotFound(f"model {name!r} has no version {version!r}")
        if entry.state is LoadState.LOADED:
            return entry
        entry = await self.load_entry(entry)
        if entry.retired:
            raise VersionRetired(f"model {name!r} version {version!r} was removed by a configuration reload")
        if entry.state is not LoadState.LOADED:
            raise ModelNotLoaded(f"model {name}:{version} failed to load: {entry.error}")
        return entry

    @contextlib.asynccontextmanager
    async def lease(self, name: str, version: str) -> AsyncIterator[ModelEntry]:
        """The loaded entry, held for the duration of the block: a reload unloads an entry it took out
        of service only once no lease on it is left."""
        entry = await self.get(name, version)
        entry.leases += 1
        try:
            yield entry
        finally:
            entry.leases -= 1

    def loaded_entry(self, name: str, version: str) -> ModelEntry | None:
        """The current entry when it is loaded and in service, without loading anything."""
        entry = self._entries.get((name, version))
        return entry if entry is not None and entry.state is LoadState.LOADED else None

    async def _ensure_loaded(self, name: str, version: str) -> ModelEntry:
        return await self.load_entry(self._entries[(name, version)])

    async def load_entry(self, entry: ModelEntry) -> ModelEntry:
        """Load ``entry`` (once, however many callers wait); a failure is recorded on the entry."""
        name, version = entry.spec.name, entry.spec.version
        async with entry.lock:
            if entry.state in (LoadState.LOADED, LoadState.FAILED) or entry.retired:
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
                max_background_batch_size=self.settings.max_background_batch_size,
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

    # Model operations: switching sets and unloading ---------------------------------------------

    def new_entry(self, spec: ModelSpec) -> ModelEntry:
        """An entry for ``spec`` outside the served set, to be loaded before ``install`` serves it."""
        return ModelEntry(spec)

    def install(self, config: ModelConfig, entries: dict[tuple[str, str], ModelEntry]) -> list[ModelEntry]:
        """Serve ``config`` with ``entries`` from now on, in one step (no await: every request resolves
        against either the old set or the new one). Returns the entries no longer served, retired."""
        previous = self._entries
        self._entries, self.config = entries, config
        self.generation += 1
        out = [entry for key, entry in previous.items() if entries.get(key) is not entry]
        for entry in out:
            entry.retired = True
            self._retiring.append(entry)
        return out

    async def unload(self, entry: ModelEntry, *, drain_timeout: float) -> bool:
        """Wait (up to ``drain_timeout``) until no request uses the retired ``entry`` and its queue is
        empty, then stop its batcher and drop the model. Returns whether the memory was released."""
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and (entry.leases or (entry.batcher is not None and not entry.batcher.idle)):
            await asyncio.sleep(0.01)
        async with entry.lock:  # a load still in progress finishes first
            if entry.batcher is not None:
                await entry.batcher.close(max(0.0, deadline - time.monotonic()))
            alive: list[weakref.ref[object]] = []
            for obj in (entry.model, entry.model.backend if entry.model is not None else None):
                if obj is not None:
                    with contextlib.suppress(TypeError):  # not every object takes a weak reference
                        alive.append(weakref.ref(obj))
            entry.model, entry.batcher = None, None
            entry.state = LoadState.NOT_LOADED
        with contextlib.suppress(ValueError):
            self._retiring.remove(entry)
        return release_memory(alive, device=self.device, frozen=self._frozen)

    def mark_started(self) -> None:
        """A reload brought up the default model after a failed start-up: the process can serve now."""
        self.startup_error = None
        self.warmed_up = True
        self.startup_complete = True

    async def close(self, drain_timeout: float = 0.0) -> None:
        for task in (self._startup_task, self._shadow_task):
            if task is not None and not task.done():
                task.cancel()
        for entry in [*self._entries.values(), *self._retiring]:
            if entry.batcher is not None:
                await entry.batcher.close(drain_timeout)

"""Replacing the served model set while serving: load and warm what is new, switch, unload what went.

Order of a reload, which is what lets no request fail and readiness never drop:

1. Versions that are new, or whose spec changed, get fresh entries outside the served set; they are
   loaded and warmed up one after the other (as are versions of the new default model that were not
   loaded yet, so the switch never makes a request wait for a load).
2. Any load or warm-up failing rejects the whole configuration: the fresh entries are unloaded and
   the current set goes on serving, untouched.
3. Otherwise ``ModelRegistry.install`` switches both the configuration and the entries in one step:
   a request resolves against the old set or the new one, never a mix.
4. Entries no longer served are unloaded in the background once no request uses them (leases) and
   their queue is empty; then the series of removed versions leave ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from service.inference.model_config import ModelConfig
from service.inference.registry import LoadState, ModelEntry, ModelRegistry

log = logging.getLogger(__name__)


class ReloadObserver(Protocol):
    def model_loaded(self, name: str, version: str, loaded: bool, instances: int = 0) -> None: ...
    def version_removed(self, model: str, version: str) -> None: ...


@dataclass(frozen=True)
class ReloadResult:
    outcome: Literal["applied", "failed"]
    generation: int  # the generation serving after this reload
    seconds: float
    loaded: tuple[str, ...] = ()  # "name:version" loaded (and warmed) for it
    removed: tuple[str, ...] = ()  # "name:version" no longer served
    error: str | None = None
    changed: bool = True  # False: the configuration equals the served one, nothing to do


@dataclass
class _Plan:
    entries: dict[tuple[str, str], ModelEntry]
    fresh: list[ModelEntry] = field(default_factory=list)  # new entries, not served before
    to_load: list[ModelEntry] = field(default_factory=list)


class ModelReloader:
    def __init__(
        self, registry: ModelRegistry, *, observer: ReloadObserver | None = None, drain_timeout: float = 30.0
    ) -> None:
        self.registry = registry
        self._observer = observer
        self._drain_timeout = drain_timeout
        self._lock = asyncio.Lock()  # one reload at a time
        self._unloads: set[asyncio.Task[None]] = set()

    async def apply(self, config: ModelConfig) -> ReloadResult:
        """Serve ``config`` once all it needs is loaded and warm; on any failure keep the current set."""
        async with self._lock:
            started = time.monotonic()
            registry = self.registry
            if config == registry.config and not any(e.state is LoadState.FAILED for e in registry.entries()):
                return ReloadResult("applied", registry.generation, 0.0, changed=False)
            plan = self._plan(config)
            try:
                for entry in plan.to_load:
                    await registry.load_entry(entry)
                    if entry.state is not LoadState.LOADED:
                        raise RuntimeError(f"{entry.spec.name}:{entry.spec.version} failed to load: {entry.error}")
                    if registry.settings.warmup:
                        await registry.warm_up(entry)
            except Exception as exc:  # a load, or a warm-up batch: the new set is not servable
                await self._discard(plan.fresh)
                return ReloadResult(
                    "failed",
                    registry.generation,
                    time.monotonic() - started,
                    loaded=_names(e for e in plan.to_load if e.state is LoadState.LOADED),
                    error=str(exc),
                )
            retired = registry.install(config, plan.entries)
            if registry.startup_error is not None or not registry.warmed_up:
                # Start-up had failed (or not finished): the default model is loaded and warm now.
                registry.mark_started()
            for entry in retired:
                self._unload_later(entry)
            return ReloadResult(
                "applied",
                registry.generation,
                time.monotonic() - started,
                loaded=_names(plan.to_load),
                removed=_names(e for e in retired if e.spec.key not in plan.entries),
            )

    async def wait_unloaded(self, timeout: float) -> None:
        """Until every retired entry is unloaded (tests, shutdown)."""
        if self._unloads:
            await asyncio.wait(set(self._unloads), timeout=timeout)

    async def close(self) -> None:
        for task in list(self._unloads):
            task.cancel()
        if self._unloads:
            await asyncio.wait(set(self._unloads), timeout=5)

    def _plan(self, config: ModelConfig) -> _Plan:
        current = {entry.spec.key: entry for entry in self.registry.entries()}
        plan = _Plan(entries={})
        for spec in config.models:
            entry = current.get(spec.key)
            if entry is None or entry.spec != spec or entry.state is LoadState.FAILED:
                # New, changed, or failed before (a fixed file or weights may load now): a fresh entry.
                entry = self.registry.new_entry(spec)
                plan.fresh.append(entry)
                plan.to_load.append(entry)
            elif entry.state is not LoadState.LOADED and (
                spec.name == config.default_model or config.is_shadow(spec.name, spec.version)
            ):
                plan.to_load.append(entry)  # now needed warm: the new default model, or a shadow target
            plan.entries[spec.key] = entry
        return plan

    async def _discard(self, fresh: list[ModelEntry]) -> None:
        """Unload entries of a rejected configuration; their series are put back as the served set says."""
        for entry in fresh:
            if entry.state is LoadState.LOADED:
                await self.registry.unload(entry, drain_timeout=0)
            self._restore_series(entry)

    def _unload_later(self, entry: ModelEntry) -> None:
        task = asyncio.get_running_loop().create_task(self._unload(entry), name=f"unload-{entry.spec.name}")
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    async def _unload(self, entry: ModelEntry) -> None:
        name, version = entry.spec.key
        started = time.monotonic()
        try:
            released = await self.registry.unload(entry, drain_timeout=self._drain_timeout)
        except Exception:
            log.exception("unloading %s:%s failed", name, version)
            return
        self._restore_series(entry)
        log.info("unloaded %s:%s in %.2fs (memory released: %s)", name, version, time.monotonic() - started, released)

    def _restore_series(self, entry: ModelEntry) -> None:
        """A version the served set no longer has loses its series; one it still has keeps them, with
        its loaded gauge reflecting the entry that serves it."""
        if self._observer is None:
            return
        name, version = entry.spec.key
        if self.registry.config.spec(name, version) is None:
            self._observer.version_removed(name, version)
            return
        serving = next((e for e in self.registry.entries() if e.spec.key == entry.spec.key), None)
        loaded = serving is not None and serving.state is LoadState.LOADED
        instances = serving.batcher.instances if serving is not None and serving.batcher is not None else 0
        self._observer.model_loaded(name, version, loaded, instances)


def _names(entries: Iterable[ModelEntry]) -> tuple[str, ...]:
    return tuple(f"{e.spec.name}:{e.spec.version}" for e in entries)

"""Watching the models file (``ML_API_MODELS_FILE``) and applying each new content of it.

The file is polled: every ``ML_API_MODELS_FILE_POLL_S`` it is read (it is small: a ConfigMap holds at
most 1 MiB) and its SHA-256 compared with the last content seen. Polling the content, not inotify
events or the mtime, is what sees every way a file changes: kubelet updates a ConfigMap volume by
writing a new timestamped directory and swapping the ``..data`` symlink to it (the file's own path
never gets a write event, and inotify watches on the old target go stale), editors rename over the
file, and some filesystems keep coarse mtimes. A content that was seen once is not applied again,
whatever its outcome, until the file changes.

Outcomes, each logged and counted in ``ml_api_model_config_reloads_total{outcome}``:
``applied`` (the new set serves), ``invalid`` (unreadable, not JSON, inconsistent: nothing was
loaded) and ``failed`` (a version did not load or warm up). On the last two the current set goes on
serving, ``ml_api_model_config_in_sync`` turns 0 and the models listing shows the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Literal, Protocol

from service.dataplane.status import ModelConfigStatus
from service.inference.model_config import ModelConfigError, content_hash, parse_model_file, read_text
from service.inference.registry import ModelRegistry
from service.inference.reload import ModelReloader, ReloadResult
from service.settings import Settings

log = logging.getLogger(__name__)

Outcome = Literal["applied", "invalid", "failed"]
# The error shown in the models listing and the log: paths and loader messages, bounded.
MAX_ERROR_CHARS = 1000


class ReloadReporter(Protocol):
    def config_reloaded(self, outcome: str, generation: int) -> None: ...


class ModelFileWatcher:
    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        reloader: ModelReloader,
        *,
        reporter: ReloadReporter | None = None,
    ) -> None:
        assert settings.models_file is not None
        self.path = settings.models_file
        self.settings = settings
        self.registry = registry
        self.reloader = reloader
        self._reporter = reporter
        self._seen: str | None = None  # hash of the last content handled (or of the last read error)
        self._task: asyncio.Task[None] | None = None
        self.status = ModelConfigStatus(
            source="file", path=self.path, generation=registry.generation, loaded_at=time.time(), in_sync=True
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="models-file-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.reloader.close()

    async def _run(self) -> None:
        # Changes made while the first set loads are picked up right after it (start-up read the file).
        await self.registry.wait_started()
        while True:
            try:
                await self.check()
            except Exception:  # the watcher must outlive any one bad poll
                log.exception("checking the models file %s failed", self.path)
            await asyncio.sleep(self.settings.models_file_poll_s)

    async def check(self) -> ReloadResult | None:
        """Read the file once; apply it when its content is new. Returns the reload result, if any."""
        try:
            text = await asyncio.to_thread(read_text, self.path)
        except ModelConfigError as exc:
            if self._seen != f"error:{exc}":
                self._seen = f"error:{exc}"
                self._rejected("invalid", str(exc))
            return None
        digest = content_hash(text)
        if digest == self._seen:
            return None
        self._seen = digest
        try:
            config = parse_model_file(text, self.settings)
        except ModelConfigError as exc:
            self._rejected("invalid", str(exc))
            return None
        if config == self.registry.config and not self.status.in_sync:
            # Back to what serves (e.g. a bad edit reverted): in sync again, nothing to load.
            self._update("applied", None)
            return None
        result = await self.reloader.apply(config)
        if result.outcome == "failed":
            self._rejected("failed", result.error or "a model version failed to load")
        elif result.changed:
            self._update("applied", None)
            log.info(
                "models file %s applied: generation %d in %.2fs; loaded %s; removed %s",
                self.path,
                result.generation,
                result.seconds,
                ", ".join(result.loaded) or "nothing",
                ", ".join(result.removed) or "nothing",
            )
        return result

    def _rejected(self, outcome: Outcome, error: str) -> None:
        error = error[:MAX_ERROR_CHARS]
        log.error(
            "models file %s rejected (%s): %s; still serving generation %d",
            self.path,
            outcome,
            error,
            self.registry.generation,
        )
        self._update(outcome, error)

    def _update(self, outcome: Outcome, error: str | None) -> None:
        now = time.time()
        applied = outcome == "applied"
        self.status = dataclasses.replace(
            self.status,
            generation=self.registry.generation,
            loaded_at=now if applied else self.status.loaded_at,
            in_sync=applied,
            last_outcome=outcome,
            last_attempt_at=now,
            last_error=error,
        )
        if self._reporter is not None:
            self._reporter.config_reloaded(outcome, self.registry.generation)

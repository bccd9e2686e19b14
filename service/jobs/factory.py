"""Builds the job backend named by ``ML_API_JOBS_BACKEND``; both take the settings and an observer."""

from __future__ import annotations

from service.jobs.base import JobBackend, JobObserver
from service.settings import Settings


def build_job_backend(settings: Settings, observer: JobObserver | None = None) -> JobBackend:
    if settings.jobs_backend == "redis":
        # Imported only when chosen: the in-process default needs no Redis client.
        from service.jobs.redis_backend import RedisJobBackend

        return RedisJobBackend(settings, observer=observer)
    from service.jobs.memory import MemoryJobBackend

    return MemoryJobBackend(settings, observer=observer)

"""Picks the job backend named by ``ML_API_JOBS_BACKEND``."""

from __future__ import annotations

from service.jobs.base import JobBackend, JobObserver
from service.jobs.memory import MemoryJobBackend
from service.settings import Settings


def build_job_backend(settings: Settings, observer: JobObserver | None = None) -> JobBackend:
    if settings.jobs_backend == "redis":
        from service.jobs.redis_backend import RedisJobBackend

        assert settings.redis_url is not None
        return RedisJobBackend(settings, observer=observer)
    return MemoryJobBackend(
        max_queue=settings.jobs_max_queue,
        ttl_s=settings.job_ttl_s,
        max_bytes=settings.max_body_bytes,
        observer=observer,
    )

"""Model and health state as plain data, and the drain flag every front end consults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HealthStatus = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True, slots=True)
class ModelStatus:
    name: str
    version: str
    labels_count: int | None
    device: str
    loaded: bool
    default: bool
    state: str
    traffic_weight: float | None
    # What serves a loaded version: its forward backend and how many instances share its queue.
    backend: str | None = None
    instances: int | None = None


@dataclass(frozen=True, slots=True)
class ModelsReport:
    default: str
    models: tuple[ModelStatus, ...]


@dataclass(frozen=True, slots=True)
class HealthReport:
    """healthy: every configured model loaded and the configured device present; degraded: loaded but a
    configured GPU is missing; unhealthy: a model failed to load or none is loaded yet."""

    status: HealthStatus
    model_loaded: bool
    gpu_available: bool
    version: str
    models: tuple[ModelStatus, ...]


class DrainState:
    """Set by the SIGTERM handler before the server stops accepting: readiness turns 503 at once and
    requests that start from then on are refused, while those in flight finish."""

    def __init__(self) -> None:
        self.draining = False

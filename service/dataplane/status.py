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
    # Model operations: the share of its model's images mirrored to it, when it is a shadow version.
    shadow_rate: float | None = None


@dataclass(frozen=True, slots=True)
class ModelConfigStatus:
    """Where the served model list comes from and how its reloads went (``ML_API_MODELS_FILE``)."""

    source: Literal["environment", "file"]
    path: str | None
    generation: int  # 1 at start-up, +1 per applied reload
    loaded_at: float  # Unix time the served configuration was installed
    in_sync: bool  # False while the file's latest content was rejected and the previous set serves
    last_outcome: Literal["applied", "invalid", "failed"] | None = None
    last_attempt_at: float | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelsReport:
    default: str
    models: tuple[ModelStatus, ...]
    config: ModelConfigStatus | None = None


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

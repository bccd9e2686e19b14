"""Metrics of operating models: configuration reloads, shadow traffic, the predicted-class distribution.

No label takes a per-request value: ``class_id`` is bounded by the model's own classes (and only
counted for models with at most ``MAX_CLASSES_COUNTED`` of them), the rest by the configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Above this many classes the per-class counter is not kept: 1000 series per version is the cap.
MAX_CLASSES_COUNTED = 1000
RELOAD_OUTCOMES = ("applied", "invalid", "failed")
SHADOW_OUTCOMES = ("success", "failed", "dropped", "unavailable")
SHADOW_LABELS = ("model", "primary_version", "shadow_version")
# Those of the inference histograms (service.observability.metrics, which imports this module).
SHADOW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ModelOpsMetrics:
    """Implements the reload, shadow and class-distribution observers of the data plane."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads = Counter(
            "ml_api_model_config_reloads",
            "Model configuration reloads from ML_API_MODELS_FILE, by outcome: applied, invalid (the file "
            "was rejected), failed (a version did not load); the served models stay as they were unless applied.",
            ("outcome",),
            registry=registry,
        )
        for outcome in RELOAD_OUTCOMES:  # every outcome exists from the start: rate() reads 0, not nothing
            self.reloads.labels(outcome)
        self.generation = Gauge(
            "ml_api_model_config_generation",
            "Generation of the served model configuration: 1 at start-up, +1 per applied reload.",
            registry=registry,
            multiprocess_mode="max",
        )
        self.last_success = Gauge(
            "ml_api_model_config_last_success_timestamp_seconds",
            "Unix time the served model configuration was installed (start-up or the last applied reload).",
            registry=registry,
            multiprocess_mode="max",
        )
        self.in_sync = Gauge(
            "ml_api_model_config_in_sync",
            "1 while the served models are what the models file says; 0 after its latest content was rejected.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.generation.set(1)
        self.in_sync.set(1)
        self.last_success.set_to_current_time()
        self.shadow_requests = Counter(
            "ml_api_shadow_requests",
            "Images mirrored to a shadow version, by outcome: success, failed (the shadow inference failed), "
            "dropped (shed under load), unavailable (the shadow version is not loaded).",
            (*SHADOW_LABELS, "outcome"),
            registry=registry,
        )
        self.shadow_agreement = Counter(
            "ml_api_shadow_agreement",
            "Successful shadow classifications by whether their top-1 class agreed with the primary's.",
            (*SHADOW_LABELS, "agreed"),
            registry=registry,
        )
        self.shadow_duration = Histogram(
            "ml_api_shadow_duration_seconds",
            "Time of one shadow classification (decode, queue at background priority, inference).",
            SHADOW_LABELS,
            buckets=SHADOW_BUCKETS,
            registry=registry,
        )
        self.predicted_class = Counter(
            "ml_api_predicted_class",
            f"Top-1 class of each successful classification, by model version (models with at most "
            f"{MAX_CLASSES_COUNTED} classes): the class distribution, to see drift.",
            ("model", "version", "class_id"),
            registry=registry,
        )

    # Reloads (service.dataplane.reload)
    def config_reloaded(self, outcome: str, generation: int) -> None:
        self.reloads.labels(outcome).inc()
        if outcome == "applied":
            self.generation.set(generation)
            self.last_success.set_to_current_time()
        self.in_sync.set(1 if outcome == "applied" else 0)

    # Shadow traffic (service.dataplane.shadow)
    def shadow_done(
        self,
        model: str,
        primary_version: str,
        shadow_version: str,
        outcome: str,
        *,
        seconds: float | None = None,
        agreed: bool | None = None,
    ) -> None:
        self.shadow_requests.labels(model, primary_version, shadow_version, outcome).inc()
        if seconds is not None:
            self.shadow_duration.labels(model, primary_version, shadow_version).observe(seconds)
        if agreed is not None:
            self.shadow_agreement.labels(model, primary_version, shadow_version, "true" if agreed else "false").inc()

    # Class distribution
    def class_predicted(self, model: str, version: str, class_id: int) -> None:
        self.predicted_class.labels(model, version, str(class_id)).inc()

    def version_removed(self, model: str, version: str) -> None:
        remove_series((self.predicted_class,), model=model, version=version)
        remove_series(
            (self.shadow_requests, self.shadow_agreement, self.shadow_duration), model=model, primary_version=version
        )
        remove_series(
            (self.shadow_requests, self.shadow_agreement, self.shadow_duration), model=model, shadow_version=version
        )


def remove_series(metrics: Iterable[MetricWrapperBase], **match: str) -> int:
    """Remove every child of ``metrics`` whose labels include ``match``; returns how many went.

    The children are found through ``collect()`` (public), then removed with ``remove()``. In
    multiprocess mode values live in per-process files and nothing can be removed: a no-op there.
    """
    removed = 0
    for metric in metrics:
        names: tuple[str, ...] = metric._labelnames  # the label order remove() takes
        seen: set[tuple[str, ...]] = set()
        for family in metric.collect():
            for sample in family.samples:
                if all(sample.labels.get(k) == v for k, v in match.items()):
                    seen.add(tuple(sample.labels[n] for n in names if n in sample.labels))
        for values in seen:
            if len(values) == len(names):
                try:
                    metric.remove(*values)
                except KeyError:
                    continue
                removed += 1
    return removed

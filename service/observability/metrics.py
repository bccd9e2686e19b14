"""Prometheus metrics of the inference path, registered per app (tests build many apps).

In gunicorn multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) values are written to per-process
files and ``/metrics`` aggregates them; gauges say how to combine processes.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.observability.model_ops_metrics import ModelOpsMetrics, remove_series

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HTTP_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class InferenceMetrics:
    """Implements the batcher's, registry's and pipeline's observer protocols."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model", "version")
        self.inference_duration = Histogram(
            "ml_api_inference_duration_seconds",
            "Model forward time per batch.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "ml_api_batch_size", "Images per model batch.", labels, buckets=BATCH_BUCKETS, registry=registry
        )
        self.queue_wait_seconds = Histogram(
            "ml_api_queue_wait_seconds",
            "Time an image waited in the batch queue, by priority (interactive, background).",
            (*labels, "priority"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth_gauge = Gauge(
            "ml_api_queue_depth",
            "Images waiting in the batch queue, by priority (interactive, background).",
            (*labels, "priority"),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.inflight_requests = Gauge(
            "ml_api_inflight_requests",
            "Inference requests in progress in this pod (the autoscaling signal).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.model_loaded_gauge = Gauge(
            "ml_api_model_loaded",
            "1 when the model version is loaded.",
            labels,
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.model_instances_gauge = Gauge(
            "ml_api_model_instances",
            "Model instances serving the version (threads sharing one copy of the weights and one queue).",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.device_fallback_gauge = Gauge(
            "ml_api_device_fallback",
            "1 when ML_API_DEVICE=cuda but no usable GPU exists, so the process serves on the CPU.",
            registry=registry,
            multiprocess_mode="max",
        )
        self.predictions = Counter(
            "ml_api_predictions", "Images classified, by outcome.", (*labels, "outcome"), registry=registry
        )
        self.image_decode = Histogram(
            "ml_api_image_decode_seconds", "Image decode time.", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.jobs = Counter("ml_api_jobs", "Async jobs finished, by outcome.", ("outcome",), registry=registry)
        self.jobs_queue_depth = Gauge(
            "ml_api_jobs_queue_depth",
            "Async jobs waiting to be processed.",
            registry=registry,
            multiprocess_mode="max",
        )
        self.job_duration = Histogram(
            "ml_api_job_duration_seconds",
            "Async job time from submission to its final state.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # Model operations: reloads, shadow traffic, the class distribution (model_ops_metrics.py).
        self.ops = ModelOpsMetrics(registry)

    # BatchObserver
    def batch_done(self, model: str, version: str, size: int, seconds: float) -> None:
        self.inference_duration.labels(model, version).observe(seconds, exemplar=trace_exemplar())
        self.batch_size.labels(model, version).observe(size)

    def queue_wait(self, model: str, version: str, priority: str, seconds: float) -> None:
        self.queue_wait_seconds.labels(model, version, priority).observe(seconds, exemplar=trace_exemplar())

    def queue_depth(self, model: str, version: str, priority: str, depth: int) -> None:
        self.queue_depth_gauge.labels(model, version, priority).set(depth)

    # LoadObserver
    def model_loaded(self, name: str, version: str, loaded: bool, instances: int = 0) -> None:
        self.model_loaded_gauge.labels(name, version).set(1 if loaded else 0)
        self.model_instances_gauge.labels(name, version).set(instances if loaded else 0)

    def device_fallback(self, fallback: bool) -> None:
        self.device_fallback_gauge.set(1 if fallback else 0)

    # PipelineObserver
    def image_decoded(self, seconds: float) -> None:
        self.image_decode.observe(seconds, exemplar=trace_exemplar())

    def prediction(self, model: str, version: str, outcome: str) -> None:
        self.predictions.labels(model, version, outcome).inc()

    def inflight(self, delta: int) -> None:
        self.inflight_requests.inc(delta)

    # Jobs
    def job_finished(self, outcome: str, seconds: float) -> None:
        self.jobs.labels(outcome).inc()
        self.job_duration.observe(seconds)

    def jobs_waiting(self, depth: int) -> None:
        self.jobs_queue_depth.set(depth)

    # Model operations: a reload removed a version, so its series go (it has no value any more).
    def version_removed(self, model: str, version: str) -> None:
        per_version = (
            self.inference_duration,
            self.batch_size,
            self.queue_wait_seconds,
            self.queue_depth_gauge,
            self.model_loaded_gauge,
            self.model_instances_gauge,
            self.predictions,
        )
        remove_series(per_version, model=model, version=version)
        self.ops.version_removed(model, version)


def trace_exemplar() -> dict[str, str] | None:
    """The current trace ID as an exemplar; prometheus_client drops exemplars in multiprocess mode."""
    if multiprocess_dir():
        return None
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    return {"trace_id": format(ctx.trace_id, "032x")}

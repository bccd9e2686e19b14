"""Inference requests by the protocol they came in with: ``/api/v1``, v2 over REST, v2 over gRPC.

Every front end records its inference requests (``/api/v1`` predict and batch routes, ``/v2`` infer,
gRPC ``ModelInfer``) in the same two series, with one outcome vocabulary whatever the protocol's own
status codes, so one dashboard panel compares them:

- ``ml_api_protocol_requests_total{protocol, outcome}``
- ``ml_api_protocol_request_duration_seconds{protocol}`` (histogram)

The model-level series (``ml_api_predictions_total``, ``ml_api_batch_size``, ``ml_api_inflight_requests``)
are the pipeline's and count every protocol already: requests of all of them share one batcher.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from service.errors import ErrorCode
from service.observability.metrics import HTTP_LATENCY_BUCKETS, trace_exemplar

PROTOCOLS = ("v1", "v2-rest", "v2-grpc")
OUTCOMES = ("success", "invalid", "denied", "rate_limited", "unavailable", "timeout", "cancelled", "error")

_OUTCOME_BY_CODE = {
    ErrorCode.UNAUTHORIZED: "denied",
    ErrorCode.FORBIDDEN: "denied",
    ErrorCode.URL_NOT_ALLOWED: "denied",
    ErrorCode.RATE_LIMITED: "rate_limited",
    ErrorCode.OVERLOADED: "unavailable",
    ErrorCode.MODEL_NOT_LOADED: "unavailable",
    ErrorCode.SHUTTING_DOWN: "unavailable",
    ErrorCode.INFERENCE_TIMEOUT: "timeout",
    ErrorCode.REQUEST_TIMEOUT: "timeout",
    ErrorCode.INTERNAL_ERROR: "error",
}


def outcome_of_code(code: ErrorCode) -> str:
    """The outcome of a request that failed with ``code`` (any other code is the client's: invalid)."""
    return _OUTCOME_BY_CODE.get(code, "invalid")


def outcome_of_status(status: int) -> str:
    """The same outcome read from an HTTP status (the statuses of ``service/api/errors.py``)."""
    if status < 400:
        return "success"
    if status in (401, 403):
        return "denied"
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "unavailable"
    if status in (408, 504):
        return "timeout"
    if status == 499:
        return "cancelled"
    return "error" if status >= 500 else "invalid"


class ProtocolMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "ml_api_protocol_requests",
            "Inference requests by front-end protocol (v1, v2-rest, v2-grpc) and outcome.",
            ("protocol", "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "ml_api_protocol_request_duration_seconds",
            "Inference request latency by front-end protocol, as the front end measured it.",
            ("protocol",),
            buckets=HTTP_LATENCY_BUCKETS,
            registry=registry,
        )
        for protocol in PROTOCOLS:  # every protocol's series exists from the start, at 0
            self.requests.labels(protocol, "success")
            self.duration.labels(protocol)

    def observe(self, protocol: str, outcome: str, seconds: float) -> None:
        self.requests.labels(protocol, outcome).inc()
        self.duration.labels(protocol).observe(seconds, exemplar=trace_exemplar())

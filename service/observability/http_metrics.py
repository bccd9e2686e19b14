"""HTTP metrics by route template (recorded by the HTTP layer's telemetry middleware) and ``/metrics``.

The series and labels are those prometheus-fastapi-instrumentator exposes (dashboards and alerts read
them), recorded here without its per-request route matching: the handler label is the route template
the HTTP layer already looked up, ``none`` for paths no route claims (no label per scanned URL).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, multiprocess
from prometheus_client.exposition import choose_encoder

from service.observability.metrics import HTTP_LATENCY_BUCKETS, multiprocess_dir, trace_exemplar

METRICS_PATH = "/metrics"


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("handler", "method", "status")
        self.requests = Counter(
            "http_requests", "Requests by route template, method and status class.", labels, registry=registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route template.",
            ("handler", "method"),
            buckets=HTTP_LATENCY_BUCKETS,
            registry=registry,
        )
        self.request_size = Summary(
            "http_request_size_bytes", "Request body bytes (Content-Length).", labels, registry=registry
        )
        self.response_size = Summary("http_response_size_bytes", "Response body bytes.", labels, registry=registry)

    def observe(
        self, handler: str, method: str, status: int, seconds: float, request_bytes: int, response_bytes: int
    ) -> None:
        status_class = f"{status // 100}xx"
        self.requests.labels(handler, method, status_class).inc()
        # The request's trace ID as an exemplar: a slow bucket in Grafana links to the trace.
        self.duration.labels(handler, method).observe(seconds, exemplar=trace_exemplar())
        self.request_size.labels(handler, method, status_class).observe(request_bytes)
        self.response_size.labels(handler, method, status_class).observe(response_bytes)


def install_metrics_endpoint(app: FastAPI, registry: CollectorRegistry) -> None:
    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        source = registry
        if multiprocess_dir():
            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(source), media_type=content_type)

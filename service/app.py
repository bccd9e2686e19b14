"""The app factory: wires settings, inference core, job backend, HTTP layer and observability."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from service import __version__
from service.api.docs_ui import install_docs
from service.api.errors import install_error_handlers
from service.api.inputs import ImageReader
from service.api.middleware import AccessLogMiddleware, BodyLimitMiddleware, DrainMiddleware, DrainState
from service.api.request_id import is_valid_request_id, new_request_id
from service.api.routes import health, jobs, models, page, predict
from service.api.security import install_security
from service.fetch import ImageFetcher
from service.inference.device import configure_torch_threads
from service.inference.pipeline import InferencePipeline
from service.inference.registry import ModelRegistry
from service.jobs.factory import build_job_backend
from service.jobs.runner import pipeline_runner
from service.observability.http_metrics import install_metrics
from service.observability.metrics import InferenceMetrics
from service.observability.tracing import build_tracer_provider
from service.settings import Settings, load_settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> FastAPI:
    settings = settings or load_settings()
    tracer_provider = tracer_provider or build_tracer_provider()
    metrics_registry = metrics_registry or CollectorRegistry(auto_describe=True)
    inference_metrics = InferenceMetrics(metrics_registry)
    drain = DrainState()
    tracer = tracer_provider.get_tracer("service.inference")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_torch_threads(settings.workers, settings.torch_threads)
        registry = ModelRegistry(
            settings, batch_observer=inference_metrics, load_observer=inference_metrics, tracer=tracer
        )
        pipeline = InferencePipeline(settings, registry, observer=inference_metrics, tracer=tracer)
        fetcher = ImageFetcher(settings)
        HTTPXClientInstrumentor.instrument_client(fetcher.client, tracer_provider=tracer_provider)
        job_backend = build_job_backend(settings, observer=inference_metrics)
        app.state.pipeline = pipeline
        app.state.reader = ImageReader(fetcher, settings.max_body_bytes)
        app.state.jobs = job_backend
        await job_backend.start(pipeline_runner(pipeline))
        registry.start()
        drain.draining = False
        restore_signals = _drain_on_sigterm(drain)
        try:
            yield
        finally:
            # Uvicorn has already stopped accepting and waited for in-flight requests here.
            drain.draining = True
            pipeline.draining = True
            restore_signals()
            await job_backend.close()
            await registry.close(drain_timeout=settings.shutdown_grace_s)
            await fetcher.aclose()
            pipeline.close()
            with contextlib.suppress(Exception):
                tracer_provider.force_flush(timeout_millis=2000)

    app = FastAPI(
        title="ml-api",
        version=__version__,
        description="Image classification with dynamic batching. Contract: docs/api-contract.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.inference_metrics = inference_metrics
    app.state.metrics_registry = metrics_registry
    app.state.tracer_provider = tracer_provider
    app.state.drain = drain

    install_error_handlers(app)
    for router in (predict.router, jobs.router, models.router, health.router, health.health_router):
        app.include_router(router)
    install_docs(app)
    page.install_page(app, settings)

    # add_middleware wraps outermost last; the OTel instrumentor wraps the whole stack. Outside in:
    # tracing -> request ID -> metrics -> access log -> drain -> CORS/rate limit/auth -> body cap -> routes.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_security(app, settings)
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(AccessLogMiddleware)
    if settings.metrics_enabled:
        install_metrics(app, metrics_registry)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        excluded_urls="/metrics,/health/live,/health/ready,/health/startup",
    )
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        generator=new_request_id,
        validator=is_valid_request_id,
        transformer=lambda value: value,
    )
    return app


def _drain_on_sigterm(drain: DrainState) -> Any:
    """Chain a SIGTERM handler that flips readiness to 503 at once, before the server's own handler.

    The server's handler then stops accepting and waits for in-flight requests (its graceful timeout);
    requests that reach the app meanwhile get 503 SHUTTING_DOWN, requests already in flight finish.
    """
    with contextlib.suppress(ValueError):  # not the main thread (e.g. a test client): nothing to chain
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            if not drain.draining:
                log.info("SIGTERM: draining (readiness now 503, new requests refused, in-flight ones finish)")
            drain.draining = True
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                raise SystemExit(0)

        signal.signal(signal.SIGTERM, handler)

        def restore() -> None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)

        return restore
    return lambda: None


__all__ = ["create_app"]

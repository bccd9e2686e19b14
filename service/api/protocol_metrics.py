"""Counts the HTTP inference requests (``/api/v1`` predict and batch routes, ``/v2`` infer) in the
per-protocol series of ``service/observability/protocols.py``, as the gRPC front end counts its own."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import is_v2_path
from service.api.policy import RouteTable
from service.observability.protocols import ProtocolMetrics, outcome_of_status

# The route classes of inference routes (service/api/policy.py).
INFERENCE_CLASSES = frozenset({"predict", "batch"})


class ProtocolMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ProtocolMetrics, routes: RouteTable) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.routes.policy(scope["path"]).rate_class not in INFERENCE_CLASSES:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 499  # no response started: the client went away first

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            status = 500
            raise
        finally:
            protocol = "v2-rest" if is_v2_path(scope["path"]) else "v1"
            self.metrics.observe(protocol, outcome_of_status(status), time.perf_counter() - started)

"""Pure ASGI middleware: request body limits, drain refusal and the one-line-per-request access log."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from asgi_correlation_id import correlation_id
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response, is_v2_path
from service.api.policy import RouteTable
from service.dataplane.status import DrainState
from service.errors import SHUTTING_DOWN_MESSAGE, ErrorCode
from service.observability.http_metrics import METRICS_PATH, HttpMetrics
from service.observability.protocols import ProtocolMetrics, outcome_of_status

access_log = logging.getLogger("service.access")


class BodyGuardMiddleware:
    """Bounds what reading a request body can cost: 413 for a body over ``max_bytes`` (by Content-Length up
    front, else counted while it streams in, chunked bodies included) and 408 when the body has not arrived
    within ``read_timeout_s`` (a client trickling bytes to hold a connection open).

    The refusal is sent from here at the moment the limit is crossed; the app then sees the client as
    gone and whatever it answers is dropped, so no handler ever turns the refusal into a different error.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send, *self._too_large())
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout_s
        received = 0
        body_complete = False
        response_started = False
        refused = False

        async def refuse(code: ErrorCode, message: str) -> Message:
            nonlocal refused
            refused = True
            if not response_started:
                await self._refuse(scope, send, code, message)
            return {"type": "http.disconnect"}

        async def guarded_receive() -> Message:
            nonlocal received, body_complete
            if refused:
                return {"type": "http.disconnect"}
            if body_complete:  # waiting for a disconnect (streaming responses): no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                return await refuse(
                    ErrorCode.REQUEST_TIMEOUT, f"the request body did not arrive within {self.read_timeout_s:g} s"
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    return await refuse(*self._too_large())
                body_complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)

    def _too_large(self) -> tuple[ErrorCode, str]:
        return ErrorCode.PAYLOAD_TOO_LARGE, f"the request body is over {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, send: Send, code: ErrorCode, message: str) -> None:
        response = error_response(code, message, scope["path"], headers={"Connection": "close"})
        await response(scope, _nothing_to_receive, send)


async def _nothing_to_receive() -> Message:
    return {"type": "http.disconnect"}


class DrainMiddleware:
    """While draining, requests that *start* get 503 SHUTTING_DOWN (readiness included); those in flight finish.

    The pipeline's own refusal is switched on only after the server has waited for in-flight requests, so a
    request accepted before SIGTERM (e.g. still uploading its body) is never failed by the drain.
    """

    # Liveness, startup, the health summary and metrics keep answering while the pod drains; the v2
    # probes answer for themselves (503 {"ready": false} is the protocol's, not an error body).
    PASS_PATHS = frozenset(
        {"/health/live", "/health/startup", "/health", "/metrics", "/v2/health/live", "/v2/health/ready"}
    )

    def __init__(self, app: ASGIApp, drain: DrainState) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.drain.draining or scope["path"] in self.PASS_PATHS:
            await self.app(scope, receive, send)
            return
        response = error_response(ErrorCode.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE, scope["path"])
        await response(scope, receive, send)


class RequestTelemetryMiddleware:
    """Each request's access-log line, HTTP metrics and per-protocol inference series, from one wrapper
    around the app (one wrapper, not three: each layer costs every request its own closure and awaits).

    Routes add ``model``/``version`` to the line through ``scope['state']``. The handler label is the
    route template from the route table, so a scan of random URLs cannot grow the label set.
    """

    # Probes and scrapes are too frequent to log; a failing one still is.
    QUIET_PATHS = frozenset({METRICS_PATH, "/health/live"})
    # The route classes (service/api/policy.py) counted as inference requests in the protocol series.
    INFERENCE_CLASSES = frozenset({"predict", "batch"})

    def __init__(
        self,
        app: ASGIApp,
        routes: RouteTable,
        metrics: HttpMetrics | None,
        protocol_metrics: ProtocolMetrics | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.protocol_metrics = protocol_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        responded = False
        response_bytes = 0
        request_id = correlation_id.get() or ""
        # The request ID on the server span: set here, inside both the tracing and request-ID layers.
        trace.get_current_span().set_attribute("http.request_id", request_id)
        state: dict[str, Any] = scope.setdefault("state", {})

        async def capture(message: Message) -> None:
            nonlocal status, responded, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                responded = True
            elif message["type"] == "http.response.body":
                response_bytes += len(message.get("body", b""))
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, capture)
        except Exception:  # a cancellation is the client going away: 499 below, not an error
            failed = True
            raise
        finally:
            path, method = scope["path"], scope["method"]
            seconds = time.perf_counter() - started
            if self.metrics is not None and path != METRICS_PATH:
                declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
                request_bytes = int(declared) if declared.isdigit() else 0
                route = self.routes.lookup(path)
                self.metrics.observe(route.template, method, status, seconds, request_bytes, response_bytes)
                if self.protocol_metrics is not None and route.policy.rate_class in self.INFERENCE_CLASSES:
                    # No response and no exception: the client went away first (nginx's 499).
                    outcome = outcome_of_status(status if responded or failed else 499)
                    self.protocol_metrics.observe("v2-rest" if is_v2_path(path) else "v1", outcome, seconds)
            if path not in self.QUIET_PATHS or status >= 400:
                client = scope.get("client")
                access_log.info(
                    "%s %s %s",
                    method,
                    path,
                    status,
                    extra={
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "client": f"{client[0]}:{client[1]}" if client else None,
                        "model": state.get("model"),
                        "version": state.get("model_version"),
                        "request_id": request_id,
                    },
                )

"""Pure ASGI middleware: request body cap, drain refusal and the one-line-per-request access log."""

from __future__ import annotations

import logging
import time
from typing import Any

from asgi_correlation_id import correlation_id
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_body, error_response
from service.dataplane.status import DrainState
from service.errors import SHUTTING_DOWN_MESSAGE, ErrorCode

access_log = logging.getLogger("service.access")


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: by Content-Length up front, else counted while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        body = (
            error_body(ErrorCode.PAYLOAD_TOO_LARGE, f"the request body is over {self.max_bytes} bytes", scope["path"])
            .model_dump_json(exclude_none=True)
            .encode()
        )
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")


class DrainMiddleware:
    """While draining, requests that *start* get 503 SHUTTING_DOWN (readiness included); those in flight finish.

    The pipeline's own refusal is switched on only after the server has waited for in-flight requests, so a
    request accepted before SIGTERM (e.g. still uploading its body) is never failed by the drain.
    """

    # Liveness, startup, the health summary and metrics keep answering while the pod drains.
    PASS_PATHS = frozenset({"/health/live", "/health/startup", "/health", "/metrics"})

    def __init__(self, app: ASGIApp, drain: DrainState) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.drain.draining or scope["path"] in self.PASS_PATHS:
            await self.app(scope, receive, send)
            return
        response = error_response(ErrorCode.SHUTTING_DOWN, SHUTTING_DOWN_MESSAGE, scope["path"])
        await response(scope, receive, send)


class AccessLogMiddleware:
    """One structured line per request; routes add ``model``/``version`` through ``scope['state']``."""

    def __init__(self, app: ASGIApp, skip_paths: tuple[str, ...] = ("/metrics", "/health/live")) -> None:
        self.app = app
        self.skip_paths = skip_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = correlation_id.get() or ""
        # The request ID on the server span: set here, inside both the tracing and request-ID layers.
        trace.get_current_span().set_attribute("http.request_id", request_id)
        state: dict[str, Any] = scope.setdefault("state", {})

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if scope["path"] not in self.skip_paths or status >= 400:
                client = scope.get("client")
                access_log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                        "client": f"{client[0]}:{client[1]}" if client else None,
                        "model": state.get("model"),
                        "version": state.get("model_version"),
                        "request_id": request_id,
                    },
                )

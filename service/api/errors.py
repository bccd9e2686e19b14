"""HTTP statuses of the error codes, and the contract's ErrorBody for every non-2xx response
(the framework's own 404/405/422 included)."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.api.schemas import ErrorBody
from service.errors import INTERNAL_ERROR_MESSAGE, ErrorCode, InvalidRequest, ServiceError

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_IMAGE: 400,
    ErrorCode.IMAGE_FETCH_FAILED: 400,
    ErrorCode.EMBEDDING_NOT_SUPPORTED: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.URL_NOT_ALLOWED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.JOB_NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.NOT_ACCEPTABLE: 406,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.MODEL_NOT_LOADED: 503,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.INFERENCE_TIMEOUT: 504,
}

# The framework's own HTTP errors keep their status and get the code that names it; a status with no
# code of its own is BAD_REQUEST (4xx) or INTERNAL_ERROR (5xx).
_FRAMEWORK_CODES = {
    status: code
    for code, status in STATUS_BY_CODE.items()
    if code
    in {
        ErrorCode.BAD_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.NOT_ACCEPTABLE,
        ErrorCode.REQUEST_TIMEOUT,
        ErrorCode.CONFLICT,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ErrorCode.VALIDATION_ERROR,
        ErrorCode.RATE_LIMITED,
        ErrorCode.INTERNAL_ERROR,
    }
}


def framework_code(status: int) -> ErrorCode:
    return _FRAMEWORK_CODES.get(status, ErrorCode.INTERNAL_ERROR if status >= 500 else ErrorCode.BAD_REQUEST)


class ApiError(ServiceError):
    """An error only the HTTP layer raises (e.g. an unsupported content type), with headers and details."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.headers = headers or {}
        self.details = details


def error_body(
    code: ErrorCode, message: str, path: str, details: list[dict[str, Any]] | None = None, *, request_id: str = ""
) -> ErrorBody:
    return ErrorBody(
        error=code, message=message, path=path, request_id=request_id or correlation_id.get() or "", details=details
    )


def is_v2_path(path: str) -> bool:
    """Under the Open Inference Protocol's prefix, whose errors are ``{"error": "<message>"}``."""
    return path == "/v2" or path.startswith("/v2/")


def error_response(
    code: ErrorCode,
    message: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
    status: int | None = None,
) -> JSONResponse:
    if is_v2_path(path):
        # The same status as anywhere else, except that the protocol has no 422: a bad request is a 400.
        v2_status = 400 if code is ErrorCode.VALIDATION_ERROR else status or STATUS_BY_CODE[code]
        return JSONResponse({"error": message}, status_code=v2_status, headers=headers)
    return JSONResponse(
        error_body(code, message, path, details).model_dump(mode="json", exclude_none=True),
        status_code=status or STATUS_BY_CODE[code],
        headers=headers,
    )


def service_error_response(exc: ServiceError, path: str) -> JSONResponse:
    """The response for a data-plane failure: its status, ``Retry-After`` when it has one, field details."""
    headers = dict(exc.headers) if isinstance(exc, ApiError) else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    details = exc.details if isinstance(exc, ApiError) else None
    if isinstance(exc, InvalidRequest):
        details = [{"loc": ["body", *exc.field], "msg": exc.message, "type": exc.kind}]
    if exc.code is ErrorCode.INTERNAL_ERROR:
        log.error("request failed: %s", exc.message)
    return error_response(exc.code, exc.message, path, headers=headers, details=details)


# Enough to fix a request by; a hostile body with thousands of bad fields gets no more.
MAX_ERROR_DETAILS = 20


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = list(exc.errors())
    details = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": err.get("type", "")}
        for err in errors[:MAX_ERROR_DETAILS]
    ]
    if len(errors) > MAX_ERROR_DETAILS:
        more = len(errors) - MAX_ERROR_DETAILS
        details.append({"loc": [], "msg": f"{more} more errors not listed", "type": "too_many_errors"})
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        message = "the request failed validation"
        if is_v2_path(request.url.path) and details:  # no details field there: the message says what
            message += f": {'.'.join(details[0]['loc'])}: {details[0]['msg']}"
        return error_response(ErrorCode.VALIDATION_ERROR, message, request.url.path, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = framework_code(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return error_response(code, message, request.url.path, headers=dict(exc.headers or {}), status=exc.status_code)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client hung up while sending its body: nobody will read this answer, and it is no fault here.
        log.info("client disconnected before sending its whole body: %s %s", request.method, request.url.path)
        return error_response(ErrorCode.BAD_REQUEST, "the client closed the connection mid-request", request.url.path)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # This handler runs outside every middleware, so the request-ID one cannot add its header.
        headers = {"X-Request-ID": rid} if (rid := correlation_id.get()) else None
        return error_response(ErrorCode.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE, request.url.path, headers=headers)


# Codes any route can answer with: auth, routing, body limits, validation, rate limits, load and drain.
COMMON_CODES = (
    ErrorCode.UNAUTHORIZED,
    ErrorCode.NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED,
    ErrorCode.REQUEST_TIMEOUT,
    ErrorCode.PAYLOAD_TOO_LARGE,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.VALIDATION_ERROR,
    ErrorCode.RATE_LIMITED,
    ErrorCode.INTERNAL_ERROR,
    ErrorCode.MODEL_NOT_LOADED,
    ErrorCode.OVERLOADED,
    ErrorCode.SHUTTING_DOWN,
)
# What classifying an image adds: bad or unreachable images, unknown models, deadlines.
IMAGE_CODES = (
    ErrorCode.INVALID_IMAGE,
    ErrorCode.IMAGE_FETCH_FAILED,
    ErrorCode.URL_NOT_ALLOWED,
    ErrorCode.MODEL_NOT_FOUND,
    ErrorCode.INFERENCE_TIMEOUT,
)


def error_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes`` (plus the common ones), one ErrorBody entry per status, so
    generated clients and fuzzers know every error shape and code a route can return."""
    by_status: defaultdict[int, list[str]] = defaultdict(list)
    for code in dict.fromkeys((*COMMON_CODES, *codes)):
        by_status[STATUS_BY_CODE[code]].append(code.value)
    return {
        status: {"model": ErrorBody, "description": ", ".join(names)} for status, names in sorted(by_status.items())
    }

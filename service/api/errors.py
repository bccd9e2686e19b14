"""The contract's ErrorBody for every non-2xx response, the framework's own 404/405/422 included."""

from __future__ import annotations

import logging
from typing import Any

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.schemas import ErrorBody
from service.inference.errors import InferenceError

log = logging.getLogger(__name__)

STATUS_BY_CODE = {
    "INVALID_IMAGE": 400,
    "IMAGE_FETCH_FAILED": 400,
    "EMBEDDING_NOT_SUPPORTED": 400,
    "UNAUTHORIZED": 401,
    "URL_NOT_ALLOWED": 403,
    "NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "JOB_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_ERROR": 422,
    "RATE_LIMITED": 429,
    "MODEL_NOT_LOADED": 503,
    "OVERLOADED": 503,
    "SHUTTING_DOWN": 503,
    "INFERENCE_TIMEOUT": 504,
    "INTERNAL_ERROR": 500,
}
_CODE_BY_STATUS = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    401: "UNAUTHORIZED",
    429: "RATE_LIMITED",
}


class ApiError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.headers, self.details = code, message, headers or {}, details

    @property
    def status(self) -> int:
        return STATUS_BY_CODE.get(self.code, 500)


def error_body(code: str, message: str, path: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = ErrorBody(error=code, message=message, path=path, request_id=correlation_id.get() or "", details=details)
    return body.model_dump(exclude_none=True)


def error_from_inference(exc: InferenceError, path: str) -> dict[str, Any]:
    return error_body(exc.code, exc.message, path)


def error_response(
    code: str,
    message: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    response_headers = dict(headers or {})
    return JSONResponse(
        error_body(code, message, path, details),
        status_code=STATUS_BY_CODE.get(code, 500),
        headers=response_headers,
    )


def inference_error_headers(exc: InferenceError) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after is not None else {}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        details.append(
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": err.get("type", "")}
        )
    return details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.code, exc.message, request.url.path, headers=exc.headers, details=exc.details)

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        if STATUS_BY_CODE.get(exc.code, 500) >= 500 and exc.code == "INTERNAL_ERROR":
            log.error("inference failed: %s", exc.message)
        return error_response(exc.code, exc.message, request.url.path, headers=inference_error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            "VALIDATION_ERROR", "the request failed validation", request.url.path, details=_validation_details(exc)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_BY_STATUS.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "NOT_FOUND")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        response = error_response(code, message, request.url.path, headers=dict(exc.headers or {}))
        response.status_code = exc.status_code
        return response

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        # This handler runs outside every middleware, so the request-ID one cannot add its header.
        headers = {"X-Request-ID": rid} if (rid := correlation_id.get()) else None
        return error_response("INTERNAL_ERROR", "internal server error", request.url.path, headers=headers)


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Documented on every route so generated clients and schemathesis know the error shape.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _doc("API key missing or invalid (UNAUTHORIZED)"),
    404: _doc("NOT_FOUND"),
    405: _doc("METHOD_NOT_ALLOWED"),
    413: _doc("PAYLOAD_TOO_LARGE"),
    415: _doc("UNSUPPORTED_MEDIA_TYPE"),
    422: _doc("VALIDATION_ERROR"),
    429: _doc("RATE_LIMITED"),
    500: _doc("INTERNAL_ERROR"),
    503: _doc("MODEL_NOT_LOADED, OVERLOADED or SHUTTING_DOWN"),
}
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    400: _doc("INVALID_IMAGE or IMAGE_FETCH_FAILED"),
    403: _doc("URL_NOT_ALLOWED"),
    404: _doc("NOT_FOUND or MODEL_NOT_FOUND"),
    504: _doc("INFERENCE_TIMEOUT"),
}

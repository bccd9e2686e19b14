"""What the sync and async clients share: building each call, reading each answer, mapping errors.

Both clients only send what this module builds and parse what it reads, so they cannot drift apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from httpx_retries import Retry, RetryTransport
from pydantic import BaseModel, ValidationError

from service import __version__
from service.api.schemas import ErrorBody, JobStatus, PredictionResponse
from service.client.errors import ApiError, MlApiConnectionError, MlApiError, MlApiTimeoutError
from service.client.images import ImagePayload
from service.client.retry import retry_policy

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
TERMINAL_JOB_STATES = frozenset({"completed", "failed"})
# sse-starlette pings every 15 s; four missed pings mean the connection is dead: reconnect.
SSE_IDLE_TIMEOUT_S = 60.0

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class ImageResult:
    """One image of a batch, stream or ``predict_many``: its prediction or its error, never both."""

    index: int
    prediction: PredictionResponse | None = None
    error: ErrorBody | None = None

    @property
    def ok(self) -> bool:
        return self.prediction is not None


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    files: dict[str, tuple[str, bytes]] | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": self.params, "headers": self.headers, "extensions": self.extensions}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.content is not None:
            kwargs["content"] = self.content
        if self.files is not None:
            kwargs["files"] = self.files
        return kwargs


def client_options(
    base_url: str,
    *,
    api_key: str | None,
    timeout: float | httpx.Timeout,
    headers: Mapping[str, str] | None,
) -> dict[str, Any]:
    """httpx.Client / AsyncClient keyword arguments (without the transport)."""
    default_headers = {"User-Agent": f"ml-api-client/{__version__}", "Accept": "application/json"}
    if api_key:
        default_headers["Authorization"] = f"Bearer {api_key}"
    return {
        "base_url": base_url.rstrip("/"),
        "headers": {**default_headers, **(headers or {})},
        "timeout": timeout,
    }


def retry_transport(
    retry: Retry | None, transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None
) -> RetryTransport:
    return RetryTransport(transport=transport, retry=retry or retry_policy())


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_headers(request_id: str | None = None) -> dict[str, str]:
    # One ID per call, kept on every retry: the server's logs show all attempts under it.
    return {"X-Request-ID": request_id or new_request_id()}


def _selection(model: str | None, version: str | None) -> dict[str, str]:
    params = {}
    if model:
        params["model"] = model
    if version:
        params["model_version"] = version
    return params


def predict_call(
    image: ImagePayload, *, top_k: int, model: str | None, version: str | None, request_id: str | None
) -> Call:
    """A URL as JSON; bytes as the raw upload body (cheapest to parse), multipart when not an image.

    Unrecognised bytes go as multipart so that the server answers INVALID_IMAGE about the bytes
    rather than 415 about a made-up Content-Type.
    """
    headers, params = request_headers(request_id), _selection(model, version)
    if image.url is not None:
        return Call("POST", "/api/v1/predict", params, headers, json={"image_url": image.url, "top_k": top_k})
    assert image.data is not None
    params["top_k"] = str(top_k)
    media_type = image.media_type
    if media_type is None:
        name = os.path.basename(image.name) or "image"
        return Call("POST", "/api/v1/predict/upload", params, headers, files={"file": (name, image.data)})
    return Call("POST", "/api/v1/predict/upload", params, {**headers, "Content-Type": media_type}, content=image.data)


def batch_call(
    path: str,
    images: Sequence[ImagePayload],
    *,
    top_k: int,
    model: str | None,
    version: str | None,
    request_id: str | None,
) -> Call:
    body = {"images": [image.as_input() for image in images], "top_k": top_k}
    return Call("POST", path, _selection(model, version), request_headers(request_id), json=body)


def embed_call(image: ImagePayload, *, model: str | None, version: str | None, request_id: str | None) -> Call:
    return Call("POST", "/api/v1/embed", _selection(model, version), request_headers(request_id), json=image.as_input())


def submit_call(
    image: ImagePayload,
    *,
    top_k: int,
    model: str | None,
    version: str | None,
    idempotency_key: str | None,
    request_id: str | None,
) -> Call:
    headers = {**request_headers(request_id), "Idempotency-Key": idempotency_key or uuid.uuid4().hex}
    body = {**image.as_input(), "top_k": top_k}
    return Call("POST", "/api/v1/predict/async", _selection(model, version), headers, json=body)


def job_path(job_id: str) -> str:
    return f"/api/v1/jobs/{quote(job_id, safe='')}"


def get_call(path: str, *, request_id: str | None = None, retry: Retry | None = None) -> Call:
    extensions = {"retry": retry} if retry is not None else {}
    return Call("GET", path, headers=request_headers(request_id), extensions=extensions)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def api_error(response: httpx.Response) -> ApiError:
    """The response's ErrorBody; a body that is not one (a proxy's HTML page) becomes one."""
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
        body = ErrorBody(
            error=f"HTTP_{response.status_code}",
            message=text or f"HTTP {response.status_code}",
            path=response.request.url.path,
            request_id=response.headers.get("X-Request-ID", ""),
        )
    return ApiError(response.status_code, body, _retry_after(response))


def parse(response: httpx.Response, model: type[Model]) -> Model:
    if not response.is_success:
        raise api_error(response)
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise MlApiError(f"unexpected answer from {response.request.url}: {exc}") from exc


def parse_batch(response: httpx.Response) -> list[ImageResult]:
    if not response.is_success:
        raise api_error(response)
    results = response.json().get("results", [])
    return [_image_result(index, item) for index, item in enumerate(results)]


def _image_result(index: int, item: dict[str, Any]) -> ImageResult:
    if "predictions" in item:
        return ImageResult(index, prediction=PredictionResponse.model_validate(item))
    return ImageResult(index, error=ErrorBody.model_validate(item))


def stream_result(data: str) -> ImageResult | None:
    """One ``data:`` payload of /predict/stream; None for the closing ``[DONE]``."""
    if data == "[DONE]":
        return None
    payload = json.loads(data)
    index = int(payload.pop("index"))
    if "error" in payload:
        return ImageResult(index, error=ErrorBody.model_validate(payload["error"]))
    return ImageResult(index, prediction=PredictionResponse.model_validate(payload))


def job_event(data: str) -> JobStatus:
    return JobStatus.model_validate_json(data)


def error_result(index: int, exc: MlApiError, path: str) -> ImageResult:
    """A per-image failure of ``predict_many`` in the contract's shape, whatever its cause."""
    if isinstance(exc, ApiError):
        return ImageResult(index, error=exc.body)
    code = "TIMEOUT" if isinstance(exc, MlApiTimeoutError) else "CONNECTION_ERROR"
    if not isinstance(exc, MlApiConnectionError):
        code = "CLIENT_ERROR"
    return ImageResult(index, error=ErrorBody(error=code, message=str(exc), path=path, request_id=""))


@contextlib.contextmanager
def transport_errors(base_url: str) -> Iterator[None]:
    """httpx's exceptions as the client's own (what a caller catches does not depend on httpx)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise MlApiTimeoutError(f"no answer from {base_url} in time ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise MlApiConnectionError(f"cannot reach {base_url}: {exc or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:  # httpx-sse's SSEError (not an event stream) and friends
        raise MlApiError(str(exc)) from exc


class Deadline:
    """An optional overall deadline for waiting on a job (monotonic clock)."""

    def __init__(self, timeout: float | None) -> None:
        self.end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()

    def passed(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def sse_timeout(self, base: float | httpx.Timeout) -> httpx.Timeout:
        """The base timeout with a read timeout that fires by the deadline or when pings stop."""
        remaining = self.remaining()
        read = SSE_IDLE_TIMEOUT_S if remaining is None else max(0.001, min(remaining, SSE_IDLE_TIMEOUT_S))
        timeout = base if isinstance(base, httpx.Timeout) else httpx.Timeout(base)
        return httpx.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=timeout.pool)

    def expired(self, job_id: str) -> MlApiTimeoutError:
        return MlApiTimeoutError(f"job {job_id} did not finish in time")

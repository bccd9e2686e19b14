"""``MlApiClient``: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType

import httpx
from httpx_retries import Retry
from httpx_sse import connect_sse

from service.api.schemas import (
    EmbedResponse,
    HealthResponse,
    JobAccepted,
    JobStatus,
    ModelsResponse,
    PredictionResponse,
)
from service.client import _core as core
from service.client.errors import JobFailedError, MlApiConnectionError
from service.client.images import ImageSource, load_image
from service.client.retry import NO_RETRY, retry_policy


class MlApiClient:
    """A typed client for the ml-api HTTP contract.

    >>> with MlApiClient("http://127.0.0.1:8000") as client:
    ...     client.predict("digit3.png").predictions[0].label
    '3'

    Non-2xx answers raise :class:`~service.client.errors.ApiError` carrying the ErrorBody; a server
    that cannot be reached raises :class:`~service.client.errors.MlApiConnectionError`. Calls are
    retried as :mod:`service.client.retry` describes (``retries=0`` turns that off).
    """

    def __init__(
        self,
        base_url: str = core.DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = core.DEFAULT_TIMEOUT_S,
        retries: int | Retry | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        retry = retry_policy(retries) if isinstance(retries, int) else retries
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(
            **core.client_options(base_url, api_key=api_key, timeout=timeout, headers=headers),
            transport=core.retry_transport(retry, transport or httpx.HTTPTransport()),
        )

    def __enter__(self) -> MlApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: core.Call) -> httpx.Response:
        with core.transport_errors(self.base_url):
            return self._http.request(call.method, call.path, **call.kwargs())

    # Predictions

    def predict(
        self,
        image: ImageSource,
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> PredictionResponse:
        """Classify one image: a path, an http(s) URL (fetched by the server), bytes or a PIL image."""
        call = core.predict_call(load_image(image), top_k=top_k, model=model, version=version, request_id=request_id)
        return core.parse(self._send(call), PredictionResponse)

    def predict_batch(
        self,
        images: Iterable[ImageSource],
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> list[core.ImageResult]:
        """Several images in one request (at most the server's ``max_batch_items``), results in order."""
        payloads = [load_image(image) for image in images]
        call = core.batch_call(
            "/api/v1/predict/batch", payloads, top_k=top_k, model=model, version=version, request_id=request_id
        )
        return core.parse_batch(self._send(call))

    def stream(
        self,
        images: Iterable[ImageSource],
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> Iterator[core.ImageResult]:
        """Several images in one request; yields each result as the server finishes it (any order)."""
        payloads = [load_image(image) for image in images]
        call = core.batch_call(
            "/api/v1/predict/stream", payloads, top_k=top_k, model=model, version=version, request_id=request_id
        )
        with (
            core.transport_errors(self.base_url),
            connect_sse(self._http, call.method, call.path, **call.kwargs()) as source,
        ):
            if not source.response.is_success:
                source.response.read()
                raise core.api_error(source.response)
            for event in source.iter_sse():
                result = core.stream_result(event.data)
                if result is None:
                    return
                yield result
        raise MlApiConnectionError("the stream ended before all results arrived")

    def embed(self, image: ImageSource, *, model: str | None = None, version: str | None = None) -> EmbedResponse:
        call = core.embed_call(load_image(image), model=model, version=version, request_id=None)
        return core.parse(self._send(call), EmbedResponse)

    # Async jobs

    def submit(
        self,
        image: ImageSource,
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> JobAccepted:
        """Queue an async job. Without ``idempotency_key`` a fresh one is made for this call, so its
        retries never queue a second job; pass your own to make resubmitting across calls safe too."""
        call = core.submit_call(
            load_image(image),
            top_k=top_k,
            model=model,
            version=version,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
        return core.parse(self._send(call), JobAccepted)

    def job(self, job_id: str) -> JobStatus:
        return core.parse(self._send(core.get_call(core.job_path(job_id))), JobStatus)

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        """Follow the job's event stream until it is completed or failed (``timeout``: overall, seconds).

        A stream that ends early (a restarted pod, a proxy's idle cut) is resumed after asking for
        the job's state, so no transition is missed.
        """
        deadline = core.Deadline(timeout)
        path = f"{core.job_path(job_id)}/events"
        while True:
            try:
                with (
                    core.transport_errors(self.base_url),
                    connect_sse(
                        self._http,
                        "GET",
                        path,
                        headers=core.request_headers(),
                        timeout=deadline.sse_timeout(self.timeout),
                    ) as source,
                ):
                    if not source.response.is_success:
                        source.response.read()
                        raise core.api_error(source.response)
                    for event in source.iter_sse():
                        status = core.job_event(event.data)
                        if status.status in core.TERMINAL_JOB_STATES:
                            return status
            except MlApiConnectionError:
                if deadline.passed():
                    raise deadline.expired(job_id) from None
            status = self.job(job_id)
            if status.status in core.TERMINAL_JOB_STATES:
                return status
            if deadline.passed():
                raise deadline.expired(job_id)
            time.sleep(min(1.0, deadline.remaining() or 1.0))

    def result(self, job_id: str, *, timeout: float | None = None) -> PredictionResponse:
        """Wait for the job; its PredictionResponse, or :class:`JobFailedError` with its ErrorBody."""
        status = self.wait(job_id, timeout=timeout)
        if status.status == "failed" or status.result is None:
            raise JobFailedError(status)
        return status.result

    # Models and health

    def models(self) -> ModelsResponse:
        return core.parse(self._send(core.get_call("/api/v1/models")), ModelsResponse)

    def health(self) -> HealthResponse:
        return core.parse(self._send(core.get_call("/health")), HealthResponse)

    def ready(self) -> bool:
        """``/health/ready``: True on 200, False on 503; asked once, never retried."""
        return self._send(core.get_call("/health/ready", retry=NO_RETRY)).status_code == 200

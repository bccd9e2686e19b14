"""``AsyncMlApiClient``: the asyncio client, the same calls as ``MlApiClient`` plus ``predict_many``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType

import httpx
from httpx_retries import Retry
from httpx_sse import aconnect_sse

from service.api.schemas import (
    EmbedResponse,
    HealthResponse,
    JobAccepted,
    JobStatus,
    ModelsResponse,
    PredictionResponse,
)
from service.client import _core as core
from service.client.errors import JobFailedError, MlApiConnectionError, MlApiError
from service.client.images import ImagePayload, ImageSource, load_image
from service.client.retry import NO_RETRY, retry_policy


async def _load(image: ImageSource) -> ImagePayload:
    # Reading a file blocks: off the event loop.
    return await asyncio.to_thread(load_image, image)


class AsyncMlApiClient:
    """The asyncio twin of :class:`~service.client.MlApiClient` (same arguments, same results)."""

    def __init__(
        self,
        base_url: str = core.DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = core.DEFAULT_TIMEOUT_S,
        retries: int | Retry | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        retry = retry_policy(retries) if isinstance(retries, int) else retries
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(
            **core.client_options(base_url, api_key=api_key, timeout=timeout, headers=headers),
            transport=core.retry_transport(retry, transport or httpx.AsyncHTTPTransport(limits=limits)),
        )

    async def __aenter__(self) -> AsyncMlApiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: core.Call) -> httpx.Response:
        with core.transport_errors(self.base_url):
            return await self._http.request(call.method, call.path, **call.kwargs())

    # Predictions

    async def predict(
        self,
        image: ImageSource,
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> PredictionResponse:
        call = core.predict_call(await _load(image), top_k=top_k, model=model, version=version, request_id=request_id)
        return core.parse(await self._send(call), PredictionResponse)

    async def predict_many(
        self,
        images: Sequence[ImageSource],
        *,
        concurrency: int = 8,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
    ) -> AsyncIterator[core.ImageResult]:
        """One request per image, at most ``concurrency`` in flight; yields results as they complete.

        A failed image (an ErrorBody, or the connection giving out after retries) is a result with
        ``error`` set; the others go on. Files are read only when their turn comes.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        queue: asyncio.Queue[core.ImageResult] = asyncio.Queue()
        indices = iter(range(len(images)))

        async def worker() -> None:
            for index in indices:  # one shared iterator: each index is taken by exactly one worker
                try:
                    prediction = await self.predict(images[index], top_k=top_k, model=model, version=version)
                    await queue.put(core.ImageResult(index, prediction=prediction))
                except MlApiError as exc:
                    await queue.put(core.error_result(index, exc, "/api/v1/predict/upload"))
                except OSError as exc:  # an unreadable file fails alone
                    await queue.put(core.error_result(index, MlApiError(f"cannot read image {index}: {exc}"), ""))

        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(images)))]
        try:
            for _ in range(len(images)):
                yield await queue.get()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def predict_batch(
        self,
        images: Iterable[ImageSource],
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> list[core.ImageResult]:
        payloads = [await _load(image) for image in images]
        call = core.batch_call(
            "/api/v1/predict/batch", payloads, top_k=top_k, model=model, version=version, request_id=request_id
        )
        return core.parse_batch(await self._send(call))

    async def stream(
        self,
        images: Iterable[ImageSource],
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        request_id: str | None = None,
    ) -> AsyncIterator[core.ImageResult]:
        payloads = [await _load(image) for image in images]
        call = core.batch_call(
            "/api/v1/predict/stream", payloads, top_k=top_k, model=model, version=version, request_id=request_id
        )
        with core.transport_errors(self.base_url):
            async with aconnect_sse(self._http, call.method, call.path, **call.kwargs()) as source:
                if not source.response.is_success:
                    await source.response.aread()
                    raise core.api_error(source.response)
                async for event in source.aiter_sse():
                    result = core.stream_result(event.data)
                    if result is None:
                        return
                    yield result
        raise MlApiConnectionError("the stream ended before all results arrived")

    async def embed(self, image: ImageSource, *, model: str | None = None, version: str | None = None) -> EmbedResponse:
        call = core.embed_call(await _load(image), model=model, version=version, request_id=None)
        return core.parse(await self._send(call), EmbedResponse)

    # Async jobs

    async def submit(
        self,
        image: ImageSource,
        *,
        top_k: int = 5,
        model: str | None = None,
        version: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> JobAccepted:
        call = core.submit_call(
            await _load(image),
            top_k=top_k,
            model=model,
            version=version,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
        return core.parse(await self._send(call), JobAccepted)

    async def job(self, job_id: str) -> JobStatus:
        return core.parse(await self._send(core.get_call(core.job_path(job_id))), JobStatus)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> JobStatus:
        deadline = core.Deadline(timeout)
        path = f"{core.job_path(job_id)}/events"
        while True:
            try:
                with core.transport_errors(self.base_url):
                    async with aconnect_sse(
                        self._http,
                        "GET",
                        path,
                        headers=core.request_headers(),
                        timeout=deadline.sse_timeout(self.timeout),
                    ) as source:
                        if not source.response.is_success:
                            await source.response.aread()
                            raise core.api_error(source.response)
                        async for event in source.aiter_sse():
                            status = core.job_event(event.data)
                            if status.status in core.TERMINAL_JOB_STATES:
                                return status
            except MlApiConnectionError:
                if deadline.passed():
                    raise deadline.expired(job_id) from None
            status = await self.job(job_id)
            if status.status in core.TERMINAL_JOB_STATES:
                return status
            if deadline.passed():
                raise deadline.expired(job_id)
            await asyncio.sleep(min(1.0, deadline.remaining() or 1.0))

    async def result(self, job_id: str, *, timeout: float | None = None) -> PredictionResponse:
        status = await self.wait(job_id, timeout=timeout)
        if status.status == "failed" or status.result is None:
            raise JobFailedError(status)
        return status.result

    # Models and health

    async def models(self) -> ModelsResponse:
        return core.parse(await self._send(core.get_call("/api/v1/models")), ModelsResponse)

    async def health(self) -> HealthResponse:
        return core.parse(await self._send(core.get_call("/health")), HealthResponse)

    async def ready(self) -> bool:
        return (await self._send(core.get_call("/health/ready", retry=NO_RETRY))).status_code == 200

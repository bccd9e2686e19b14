"""A typed Python client for ml-api, sync and async, on httpx; never imports torch or FastAPI.

>>> from service.client import MlApiClient
>>> with MlApiClient("http://127.0.0.1:8000") as client:
...     print(client.predict("digit3.png", top_k=3).predictions[0].label)

Results are the contract's own pydantic models (``service.api.schemas``); errors are
:class:`ApiError` (with the ErrorBody), :class:`MlApiConnectionError` and :class:`MlApiTimeoutError`.
"""

from service.api.schemas import (
    EmbedResponse,
    ErrorBody,
    HealthResponse,
    JobAccepted,
    JobStatus,
    ModelInfo,
    ModelsResponse,
    Prediction,
    PredictionResponse,
)
from service.client._core import DEFAULT_URL, ImageResult
from service.client.aio import AsyncMlApiClient
from service.client.errors import ApiError, JobFailedError, MlApiConnectionError, MlApiError, MlApiTimeoutError
from service.client.images import ImageSource
from service.client.retry import retry_policy
from service.client.sync import MlApiClient

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "AsyncMlApiClient",
    "EmbedResponse",
    "ErrorBody",
    "HealthResponse",
    "ImageResult",
    "ImageSource",
    "JobAccepted",
    "JobFailedError",
    "JobStatus",
    "MlApiClient",
    "MlApiConnectionError",
    "MlApiError",
    "MlApiTimeoutError",
    "ModelInfo",
    "ModelsResponse",
    "Prediction",
    "PredictionResponse",
    "retry_policy",
]

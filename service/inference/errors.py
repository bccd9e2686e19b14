"""Errors raised by the inference core; the HTTP layer maps each ``code`` to a status."""

from __future__ import annotations


class InferenceError(Exception):
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidImage(InferenceError):
    code = "INVALID_IMAGE"


class ImageTooLarge(InferenceError):
    code = "PAYLOAD_TOO_LARGE"


class ModelNotFound(InferenceError):
    code = "MODEL_NOT_FOUND"


class ModelNotLoaded(InferenceError):
    code = "MODEL_NOT_LOADED"


class Overloaded(InferenceError):
    code = "OVERLOADED"


class ShuttingDown(InferenceError):
    code = "SHUTTING_DOWN"


class InferenceTimeout(InferenceError):
    code = "INFERENCE_TIMEOUT"


class EmbeddingUnsupported(InferenceError):
    code = "EMBEDDING_NOT_SUPPORTED"


class InferenceFailed(InferenceError):
    code = "INTERNAL_ERROR"


class UrlNotAllowed(InferenceError):
    code = "URL_NOT_ALLOWED"


class ImageFetchFailed(InferenceError):
    code = "IMAGE_FETCH_FAILED"

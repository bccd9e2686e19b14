"""Every error condition of the service: one code each, one exception class each, one message each.

The codes are the contract's ``ErrorBody.error`` values. The inference core, the job backends and
the data plane raise these exceptions; each front end maps a code to its protocol's status (the
HTTP table is ``service/api/errors.py``), and metrics label outcomes from the same codes.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_IMAGE = "INVALID_IMAGE"
    IMAGE_FETCH_FAILED = "IMAGE_FETCH_FAILED"
    EMBEDDING_NOT_SUPPORTED = "EMBEDDING_NOT_SUPPORTED"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    URL_NOT_ALLOWED = "URL_NOT_ALLOWED"
    NOT_FOUND = "NOT_FOUND"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    CONFLICT = "CONFLICT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    RATE_LIMITED = "RATE_LIMITED"
    BAD_REQUEST = "BAD_REQUEST"
    MODEL_NOT_LOADED = "MODEL_NOT_LOADED"
    OVERLOADED = "OVERLOADED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INFERENCE_TIMEOUT = "INFERENCE_TIMEOUT"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    @property
    def outcome(self) -> str:
        """The ``outcome`` label of ``ml_api_predictions_total`` for an image that failed this way."""
        return _OUTCOMES.get(self, "error")


_OUTCOMES = {
    ErrorCode.INVALID_IMAGE: "invalid_image",
    ErrorCode.PAYLOAD_TOO_LARGE: "invalid_image",
    ErrorCode.INFERENCE_TIMEOUT: "timeout",
    ErrorCode.OVERLOADED: "overloaded",
    ErrorCode.SHUTTING_DOWN: "overloaded",
}

# Messages used by more than one raiser, so each condition reads the same wherever it surfaces.
SHUTTING_DOWN_MESSAGE = "the server is shutting down"
INTERNAL_ERROR_MESSAGE = "internal server error"


class ServiceError(Exception):
    """A failure with a contract error code; ``retry_after`` (seconds) tells clients when to come back."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidImage(ServiceError):
    code = ErrorCode.INVALID_IMAGE


class ImageTooLarge(ServiceError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class ModelNotFound(ServiceError):
    code = ErrorCode.MODEL_NOT_FOUND


class ModelNotLoaded(ServiceError):
    code = ErrorCode.MODEL_NOT_LOADED


class Overloaded(ServiceError):
    code = ErrorCode.OVERLOADED

    def __init__(self, message: str, *, retry_after: float | None = 1) -> None:
        super().__init__(message, retry_after=retry_after)


class ShuttingDown(ServiceError):
    code = ErrorCode.SHUTTING_DOWN

    def __init__(self, message: str = SHUTTING_DOWN_MESSAGE) -> None:
        super().__init__(message)


class InferenceTimeout(ServiceError):
    code = ErrorCode.INFERENCE_TIMEOUT


class EmbeddingUnsupported(ServiceError):
    code = ErrorCode.EMBEDDING_NOT_SUPPORTED


class InferenceFailed(ServiceError):
    code = ErrorCode.INTERNAL_ERROR


class UrlNotAllowed(ServiceError):
    code = ErrorCode.URL_NOT_ALLOWED


class ImageFetchFailed(ServiceError):
    code = ErrorCode.IMAGE_FETCH_FAILED


class JobNotFound(ServiceError):
    code = ErrorCode.JOB_NOT_FOUND


class InvalidTensor(ServiceError):
    """An Open Inference Protocol request whose tensors do not fit the model (name, datatype, shape, data)."""

    code = ErrorCode.BAD_REQUEST


class InvalidRequest(ServiceError):
    """A request field the schema could not check (e.g. too many batch items for this server's limit).

    ``field`` is the location of the offending field, as ``details[].loc`` reports it.
    """

    code = ErrorCode.VALIDATION_ERROR

    def __init__(self, message: str, *, field: tuple[str, ...] = (), kind: str = "value_error") -> None:
        super().__init__(message)
        self.field = field
        self.kind = kind

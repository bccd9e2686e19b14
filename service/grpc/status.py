"""gRPC status codes of the error codes, and the status a failed call ends with.

One table, as ``service/api/errors.py`` has for HTTP. A failure that says when to come back (overload,
rate limits) carries ``google.rpc.RetryInfo`` in the rich status details
(``grpc-status-details-bin``, read with ``grpc_status.rpc_status.from_call``) and the same delay,
in whole seconds, as ``retry-after`` trailing metadata for clients that read no details.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.errors import ErrorCode, ServiceError

CODE_BY_ERROR: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_IMAGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.IMAGE_FETCH_FAILED: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.EMBEDDING_NOT_SUPPORTED: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.VALIDATION_ERROR: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_ACCEPTABLE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.URL_NOT_ALLOWED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.JOB_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.REQUEST_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.MODEL_NOT_LOADED: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INFERENCE_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.INTERNAL_ERROR: grpc.StatusCode.INTERNAL,
}


Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True, slots=True)
class Failure:
    """What ``ServicerContext.abort`` is called with."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: Metadata


def failure_of(exc: ServiceError, metadata: Metadata = ()) -> Failure:
    """How a call failing with ``exc`` ends; ``metadata`` joins its trailing metadata."""
    code = CODE_BY_ERROR[exc.code]
    status = status_pb2.Status(code=code.value[0], message=exc.message)
    trailing = metadata
    if exc.retry_after is not None:
        seconds = max(1, math.ceil(exc.retry_after))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds)))
        status.details.append(detail)
        trailing = (*trailing, ("retry-after", str(seconds)))
    rich = rpc_status.to_status(status)
    return Failure(rich.code, rich.details, (*rich.trailing_metadata, *trailing))

"""Job records as JSON, the form the Redis backend stores and streams them in."""

from __future__ import annotations

import json
from typing import Any

from service.errors import ErrorCode
from service.inference.results import Classification, ClassScore
from service.jobs.base import JobFailure, JobRecord


def record_to_json(record: JobRecord) -> str:
    result = record.result
    error = record.error
    data: dict[str, Any] = {
        "job_id": record.job_id,
        "status": record.status,
        "result": None
        if result is None
        else {
            "predictions": [[p.class_id, p.label, p.confidence] for p in result.predictions],
            "model_name": result.model_name,
            "model_version": result.model_version,
            "inference_time_ms": result.inference_time_ms,
        },
        "error": None if error is None else {"code": error.code.value, "message": error.message},
        "request_id": record.request_id,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    return json.dumps(data, separators=(",", ":"))


def record_from_json(raw: bytes | str) -> JobRecord:
    data = json.loads(raw)
    result = data["result"]
    error = data["error"]
    return JobRecord(
        job_id=data["job_id"],
        status=data["status"],
        result=None
        if result is None
        else Classification(
            predictions=tuple(ClassScore(c, label, p) for c, label, p in result["predictions"]),
            model_name=result["model_name"],
            model_version=result["model_version"],
            inference_time_ms=result["inference_time_ms"],
        ),
        error=None if error is None else JobFailure(ErrorCode(error["code"]), error["message"]),
        request_id=data["request_id"],
        created_at=data["created_at"],
        updated_at=data["updated_at"],
    )

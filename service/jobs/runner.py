"""Runs one job through the inference pipeline and shapes its result like the sync API's."""

from __future__ import annotations

from typing import Any

from service.inference.errors import InferenceError
from service.inference.pipeline import InferencePipeline
from service.jobs.base import JobRequest, JobState

JOB_PATH = "/api/v1/predict/async"


def pipeline_runner(pipeline: InferencePipeline):  # type: ignore[no-untyped-def]
    async def run(job_id: str, request: JobRequest) -> tuple[JobState, dict[str, Any] | None, dict[str, Any] | None]:
        try:
            outcome, batch = await pipeline.classify_one(
                request.image, model=request.model, version=request.model_version, top_k=request.top_k
            )
        except InferenceError as exc:
            return (
                "failed",
                None,
                {"error": exc.code, "message": exc.message, "path": JOB_PATH, "request_id": request.request_id},
            )
        return "completed", batch.prediction_payload(outcome, request.request_id), None

    return run

"""What the client raises: the server's ErrorBody as a typed exception, or a failure to reach it."""

from __future__ import annotations

from service.api.schemas import ErrorBody, JobStatus


class MlApiError(Exception):
    """Base of every error the client raises."""


class ApiError(MlApiError):
    """The server answered with a non-2xx status; ``body`` is its ErrorBody (the contract's shape)."""

    def __init__(self, status_code: int, body: ErrorBody, retry_after: float | None = None) -> None:
        super().__init__(f"{status_code} {body.error}: {body.message}")
        self.status_code = status_code
        self.body = body
        self.retry_after = retry_after

    @property
    def code(self) -> str:
        return self.body.error

    @property
    def message(self) -> str:
        return self.body.message

    @property
    def request_id(self) -> str:
        return self.body.request_id


class JobFailedError(MlApiError):
    """An async job ended ``failed``; ``body`` is the job's ErrorBody."""

    def __init__(self, job: JobStatus) -> None:
        self.job = job
        self.body = job.error or ErrorBody(
            error="INTERNAL_ERROR", message="the job failed", path=f"/api/v1/jobs/{job.job_id}", request_id=""
        )
        super().__init__(f"job {job.job_id} failed: {self.body.error}: {self.body.message}")


class MlApiConnectionError(MlApiError):
    """The server could not be reached, or the connection broke (after any retries)."""


class MlApiTimeoutError(MlApiConnectionError):
    """No answer within the timeout (not retried: the timeout is the caller's budget for the call)."""

"""When a call is sent again, and how long the client waits first.

Built on ``httpx-retries`` (a transport, so the sync and async clients share one policy and every
request, streaming ones included, is covered before its body is read):

- retried: 429 RATE_LIMITED, 502 (a proxy or port-forward whose pod went away) and 503
  (OVERLOADED, MODEL_NOT_LOADED, SHUTTING_DOWN): the server did not do the work, and another try
  (or another replica) may. Connection failures likewise.
- never retried: any other 4xx (the same request gets the same answer), 500, and 504 INFERENCE_TIMEOUT
  (the server already spent its deadline on it; repeating it adds load when there is least room).
  Read timeouts are not retried either: the timeout is the caller's budget for the call.
- POST is retried too: predictions have no side effects, and async submits carry an Idempotency-Key
  that is the same on every attempt, so a retried submit never makes a second job.
- the wait is exponential with full jitter (backoff_factor * 2**attempt, times a random 0..1); a
  ``Retry-After`` header replaces it as a floor, plus up to 25% so that the clients one overload
  turned away do not all come back in the same instant.
"""

from __future__ import annotations

import random

import httpx
from httpx_retries import Retry

RETRY_STATUSES = (429, 502, 503)
RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF_FACTOR = 0.5
MAX_SINGLE_WAIT_S = 30.0
MAX_TOTAL_WAIT_S = 120.0


class JitteredRetry(Retry):
    def parse_retry_after(self, retry_after: str) -> float:
        return super().parse_retry_after(retry_after) * random.uniform(1.0, 1.25)


def retry_policy(retries: int = DEFAULT_RETRIES, backoff_factor: float = DEFAULT_BACKOFF_FACTOR) -> Retry:
    """The client's default policy; ``retries=0`` sends every call exactly once."""
    return JitteredRetry(
        total=retries,
        allowed_methods=("GET", "POST"),
        status_forcelist=RETRY_STATUSES,
        retry_on_exceptions=RETRY_EXCEPTIONS,
        backoff_factor=backoff_factor,
        backoff_jitter=1.0,
        respect_retry_after_header=True,
        max_backoff_wait=MAX_SINGLE_WAIT_S,
        total_timeout=MAX_TOTAL_WAIT_S,
    )


NO_RETRY = retry_policy(0)

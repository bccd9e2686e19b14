"""Retries against real refusals: 503 OVERLOADED from a full inference or job queue, 429 from the rate
limiter; never a retry on another 4xx or on a timeout. Attempts are counted in the server's access log
(every attempt of one call carries the call's X-Request-ID)."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from service.client import ApiError, AsyncMlApiClient, MlApiClient, MlApiTimeoutError
from tests.client.helpers import Digit, settle_access_lines
from tests.servers import Server, server

pytestmark = pytest.mark.slow

# A request sits in the queue for this long waiting for a fuller batch, so a second one finds it full.
BATCH_WAIT_MS = 1000  # the most the setting allows


@pytest.fixture(scope="module")
def overloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "ML_API_MAX_QUEUE_SIZE": "1",
        "ML_API_MAX_BATCH_SIZE": "2",
        "ML_API_MAX_BATCH_WAIT_MS": str(BATCH_WAIT_MS),
    }
    with server("uvicorn", env, tmp_path_factory.mktemp("logs") / "overloaded.log") as srv:
        yield srv


@pytest.fixture(scope="module")
def jobs_full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One queued job at most; single predictions limited to 2 per 3 seconds per client."""
    env = {
        "ML_API_JOBS_MAX_QUEUE": "1",
        "ML_API_MAX_BATCH_WAIT_MS": str(BATCH_WAIT_MS),
        "ML_API_RATE_LIMIT_ENABLED": "true",
        "ML_API_RATE_LIMITS": '{"predict": "2 per 3 seconds", "default": "1000/second"}',
    }
    with server("uvicorn", env, tmp_path_factory.mktemp("logs") / "jobs.log") as srv:
        yield srv


def _times(lines: list[dict[str, object]]) -> list[datetime.datetime]:
    return [datetime.datetime.strptime(str(line["time"]), "%Y-%m-%d %H:%M:%S,%f") for line in lines]


def _gauge(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    match = re.search(rf"^{name}(?:\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _wait_for_gauge(base: str, name: str, value: float) -> None:
    deadline = time.monotonic() + 15
    while _gauge(base, name) < value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.02)


@contextlib.contextmanager
def _in_background(*calls: tuple[str, dict[str, object]]) -> Iterator[None]:
    """Raw httpx POSTs in threads (the load that fills a queue), joined on exit."""
    threads = [
        threading.Thread(target=lambda url=url, kw=kw: httpx.post(url, timeout=60, **kw))  # type: ignore[misc]
        for url, kw in calls
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for thread in threads:
            thread.join(timeout=60)


def test_a_503_overloaded_is_retried_after_retry_after_until_it_succeeds(
    overloaded: Server, samples: tuple[Digit, ...]
) -> None:
    blocker = (
        f"{overloaded.base}/api/v1/predict/upload",
        {"content": samples[0].png, "headers": {"Content-Type": "image/png", "X-Request-ID": "blocker-1"}},
    )
    with _in_background(blocker), MlApiClient(overloaded.base, retries=6) as client:
        _wait_for_gauge(overloaded.base, "ml_api_queue_depth", 1)
        result = client.predict(samples[1].png, request_id="retried-503")
    assert result.predictions[0].label == samples[1].label
    lines = settle_access_lines(overloaded, "retried-503", quiet_s=0.5)
    statuses = [line["status"] for line in lines]
    assert statuses[-1] == 200 and set(statuses[:-1]) == {503} and len(statuses) >= 2, statuses
    # Retry-After: 1 is honoured: no attempt follows a 503 sooner than a second later.
    times = _times(lines)
    assert all((b - a).total_seconds() >= 0.9 for a, b in itertools.pairwise(times)), times


def test_retries_give_up_after_the_configured_count(overloaded: Server, samples: tuple[Digit, ...]) -> None:
    # Two images never fit a queue of one: every attempt is a 503 OVERLOADED.
    with MlApiClient(overloaded.base, retries=2) as client, pytest.raises(ApiError) as caught:
        client.predict_batch([samples[0].png, samples[1].png], request_id="always-503")
    assert (caught.value.status_code, caught.value.code, caught.value.retry_after) == (503, "OVERLOADED", 1.0)
    assert [line["status"] for line in settle_access_lines(overloaded, "always-503", at_least=3)] == [503] * 3


def test_retries_zero_sends_once(overloaded: Server, samples: tuple[Digit, ...]) -> None:
    with MlApiClient(overloaded.base, retries=0) as client, pytest.raises(ApiError) as caught:
        client.predict_batch([samples[0].png, samples[1].png], request_id="no-retry-503")
    assert caught.value.code == "OVERLOADED"
    assert len(settle_access_lines(overloaded, "no-retry-503", quiet_s=1.5)) == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"image": b"not an image"}, 400, "INVALID_IMAGE"),
        ({"model": "no-such-model"}, 404, "MODEL_NOT_FOUND"),
        ({"top_k": 99}, 422, "VALIDATION_ERROR"),
    ],
)
def test_a_4xx_is_never_retried(
    overloaded: Server, samples: tuple[Digit, ...], kwargs: dict[str, object], status: int, code: str
) -> None:
    request_id = f"no-retry-{status}"
    image = kwargs.pop("image", samples[0].png)
    with MlApiClient(overloaded.base, retries=5) as client, pytest.raises(ApiError) as caught:
        client.predict(image, request_id=request_id, **kwargs)  # type: ignore[arg-type]
    assert (caught.value.status_code, caught.value.code) == (status, code)
    assert [line["status"] for line in settle_access_lines(overloaded, request_id, quiet_s=1.5)] == [status]


def test_a_timeout_raises_and_is_not_retried(overloaded: Server, samples: tuple[Digit, ...]) -> None:
    # The lone request waits BATCH_WAIT_MS for a fuller batch: far past a 0.3 s timeout.
    with MlApiClient(overloaded.base, timeout=0.3, retries=5) as client, pytest.raises(MlApiTimeoutError):
        client.predict(samples[0].png, request_id="timed-out")
    # The server still finishes it and logs it once; a retry would log a second line.
    assert len(settle_access_lines(overloaded, "timed-out", quiet_s=BATCH_WAIT_MS / 1000 + 1.0)) == 1


@pytest.mark.anyio
async def test_async_client_retries_a_503_too(overloaded: Server, samples: tuple[Digit, ...]) -> None:
    blocker = (
        f"{overloaded.base}/api/v1/predict/upload",
        {"content": samples[0].png, "headers": {"Content-Type": "image/png", "X-Request-ID": "blocker-2"}},
    )
    with _in_background(blocker):
        _wait_for_gauge(overloaded.base, "ml_api_queue_depth", 1)
        async with AsyncMlApiClient(overloaded.base, retries=6) as client:
            result = await client.predict(samples[2].png, request_id="async-retried-503")
    assert result.predictions[0].label == samples[2].label
    statuses = [line["status"] for line in settle_access_lines(overloaded, "async-retried-503", quiet_s=0.5)]
    assert statuses[0] == 503 and statuses[-1] == 200, statuses


def test_a_full_job_queue_is_retried_and_the_job_runs(jobs_full: Server, samples: tuple[Digit, ...]) -> None:
    with MlApiClient(jobs_full.base, retries=8) as client:
        # Four job workers each hold a job for BATCH_WAIT_MS; a fifth fills the queue of one.
        for _ in range(5):
            client.submit(samples[0].png)
        _wait_for_gauge(jobs_full.base, "ml_api_jobs_queue_depth", 1)
        accepted = client.submit(samples[3].png, request_id="retried-submit")
        final = client.wait(accepted.job_id, timeout=60)
    assert final.status == "completed"
    assert final.result is not None and final.result.predictions[0].label == samples[3].label
    statuses = [line["status"] for line in settle_access_lines(jobs_full, "retried-submit", quiet_s=0.5)]
    assert statuses[0] == 503 and statuses[-1] == 202 and set(statuses[:-1]) == {503}, statuses


def test_a_429_is_retried_after_retry_after(jobs_full: Server, samples: tuple[Digit, ...]) -> None:
    with MlApiClient(jobs_full.base, retries=4) as client:
        labels = [client.predict(samples[i].png, request_id=f"limited-{i}").predictions[0].label for i in range(3)]
    assert labels == [samples[i].label for i in range(3)]
    # Each line is written just after its response: wait for both.
    statuses = [line["status"] for line in settle_access_lines(jobs_full, "limited-2", at_least=2, quiet_s=0.5)]
    # Two calls fit the window of 3 s; the third was refused with 429 and went through after waiting.
    assert statuses[0] == 429 and statuses[-1] == 200, statuses

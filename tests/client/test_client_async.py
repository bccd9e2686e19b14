"""AsyncMlApiClient against a real ``python -m service``: every method, the same answers as the sync client."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from service.client import (
    ApiError,
    AsyncMlApiClient,
    JobFailedError,
    MlApiConnectionError,
    PredictionResponse,
)
from tests.client.conftest import API_KEY
from tests.client.helpers import Digit, settle_access_lines
from tests.conftest import free_port
from tests.imagehost import image_host
from tests.servers import Server

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(served: Server) -> AsyncIterator[AsyncMlApiClient]:
    async with AsyncMlApiClient(served.base) as c:
        yield c


async def test_predict_path_bytes_pil_and_url(
    client: AsyncMlApiClient, samples: tuple[Digit, ...], tmp_path: Path
) -> None:
    path = tmp_path / "d.png"
    path.write_bytes(samples[0].png)
    by_path = await client.predict(path, top_k=2)
    assert isinstance(by_path, PredictionResponse)
    assert by_path.predictions[0].label == samples[0].label and len(by_path.predictions) == 2
    assert (await client.predict(samples[1].png)).predictions[0].label == samples[1].label
    image = Image.open(io.BytesIO(samples[2].png))
    assert (await client.predict(image)).predictions[0].label == samples[2].label
    routes = {"/d.png": (200, {"Content-Type": "image/png"}, samples[3].png)}
    with image_host(routes) as host:
        assert (await client.predict(f"{host}/d.png")).predictions[0].label == samples[3].label


async def test_errors_carry_the_error_body(
    client: AsyncMlApiClient, served: Server, samples: tuple[Digit, ...]
) -> None:
    with pytest.raises(ApiError) as caught:
        await client.predict(b"not an image", request_id="async-not-an-image")
    assert (caught.value.status_code, caught.value.code, caught.value.request_id) == (
        400,
        "INVALID_IMAGE",
        "async-not-an-image",
    )
    assert len(settle_access_lines(served, "async-not-an-image", quiet_s=1.0)) == 1
    with pytest.raises(ApiError) as caught:
        await client.predict(samples[0].png, model="nope")
    assert caught.value.code == "MODEL_NOT_FOUND"


async def test_predict_many_yields_each_image_once(client: AsyncMlApiClient, samples: tuple[Digit, ...]) -> None:
    images: list[bytes] = [d.png for d in samples[:20]] + [b"broken"]
    results = [r async for r in client.predict_many(images, concurrency=4, top_k=1)]
    assert sorted(r.index for r in results) == list(range(21))
    by_index = {r.index: r for r in results}
    for index, digit in enumerate(samples[:20]):
        prediction = by_index[index].prediction
        assert prediction is not None and prediction.predictions[0].label == digit.label
    assert by_index[20].error is not None and by_index[20].error.error == "INVALID_IMAGE"


async def test_predict_many_reports_an_unreadable_file_and_goes_on(
    client: AsyncMlApiClient, samples: tuple[Digit, ...], tmp_path: Path
) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(samples[0].png)
    results = {r.index: r for r in [r async for r in client.predict_many([tmp_path / "gone.png", good])]}
    assert results[0].error is not None and results[0].error.error == "CLIENT_ERROR"
    assert results[1].ok


async def test_batch_and_stream(client: AsyncMlApiClient, samples: tuple[Digit, ...]) -> None:
    batch = await client.predict_batch([samples[0].png, b"x"])
    assert batch[0].prediction is not None and batch[0].prediction.predictions[0].label == samples[0].label
    assert batch[1].error is not None and batch[1].error.error == "INVALID_IMAGE"
    streamed = [r async for r in client.stream([d.png for d in samples[:4]])]
    assert sorted(r.index for r in streamed) == [0, 1, 2, 3]
    for r in streamed:
        assert r.prediction is not None and r.prediction.predictions[0].label == samples[r.index].label
    with pytest.raises(ApiError) as caught:
        [r async for r in client.stream([samples[0].png], version="99")]
    assert caught.value.code == "MODEL_NOT_FOUND"


async def test_embed(client: AsyncMlApiClient, samples: tuple[Digit, ...]) -> None:
    result = await client.embed(samples[0].png)
    assert result.dim == len(result.embedding) > 0


async def test_jobs(client: AsyncMlApiClient, samples: tuple[Digit, ...]) -> None:
    accepted = await client.submit(samples[6].png, idempotency_key="async-idem-1")
    assert (await client.submit(samples[6].png, idempotency_key="async-idem-1")).job_id == accepted.job_id
    final = await client.wait(accepted.job_id, timeout=60)
    assert final.status == "completed"
    assert (await client.job(accepted.job_id)).status == "completed"
    assert (await client.result(accepted.job_id, timeout=60)).predictions[0].label == samples[6].label
    failed = await client.submit(b"not an image")
    with pytest.raises(JobFailedError) as caught:
        await client.result(failed.job_id, timeout=60)
    assert caught.value.body.error == "INVALID_IMAGE"
    with pytest.raises(ApiError) as not_found:
        await client.wait("no-such-job")
    assert not_found.value.code == "JOB_NOT_FOUND"


async def test_models_health_ready(client: AsyncMlApiClient) -> None:
    assert (await client.models()).default == "digits"
    assert (await client.health()).status == "healthy"
    assert await client.ready() is True


async def test_api_key(keyed: Server, samples: tuple[Digit, ...]) -> None:
    async with AsyncMlApiClient(keyed.base, api_key=API_KEY) as good:
        assert (await good.predict(samples[0].png)).predictions[0].label == samples[0].label
    async with AsyncMlApiClient(keyed.base) as none:
        with pytest.raises(ApiError) as caught:
            await none.models()
        assert caught.value.status_code == 401


async def test_unreachable_server() -> None:
    async with AsyncMlApiClient(f"http://127.0.0.1:{free_port()}", retries=1) as client:
        with pytest.raises(MlApiConnectionError):
            await client.models()
        results = [r async for r in client.predict_many([b"\x89PNG\r\n\x1a\n"])]
        assert results[0].error is not None and results[0].error.error == "CONNECTION_ERROR"

"""MlApiClient against a real ``python -m service``: every method, results as the contract's models."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from service.client import (
    ApiError,
    EmbedResponse,
    HealthResponse,
    JobAccepted,
    JobFailedError,
    JobStatus,
    MlApiClient,
    MlApiConnectionError,
    ModelsResponse,
    PredictionResponse,
)
from tests.client.conftest import API_KEY
from tests.client.helpers import Digit, settle_access_lines
from tests.conftest import free_port
from tests.imagehost import image_host
from tests.servers import Server


@pytest.fixture
def client(served: Server) -> Iterator[MlApiClient]:
    with MlApiClient(served.base) as c:
        yield c


def test_predict_a_path_gives_the_in_process_label(
    client: MlApiClient, samples: tuple[Digit, ...], tmp_path: Path
) -> None:
    path = tmp_path / "digit.png"
    path.write_bytes(samples[0].png)
    result = client.predict(path, top_k=3)
    assert isinstance(result, PredictionResponse)
    assert result.predictions[0].label == samples[0].label
    assert len(result.predictions) == 3
    assert (result.model_name, result.model_version) == ("digits", "1")
    # A str path works the same as a Path.
    assert client.predict(str(path)).predictions[0].label == samples[0].label


def test_predict_bytes_goes_as_the_raw_upload_body(
    client: MlApiClient, served: Server, samples: tuple[Digit, ...]
) -> None:
    result = client.predict(samples[1].png, request_id="sync-raw-bytes")
    assert result.predictions[0].label == samples[1].label
    assert result.request_id == "sync-raw-bytes"
    [line] = settle_access_lines(served, "sync-raw-bytes", quiet_s=0.2)
    assert (line["method"], line["path"], line["status"]) == ("POST", "/api/v1/predict/upload", 200)


def test_predict_a_pil_image(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    image = Image.open(io.BytesIO(samples[2].png))
    image.load()
    assert client.predict(image).predictions[0].label == samples[2].label
    # A mode PNG cannot store is converted first.
    assert client.predict(image.convert("CMYK")).predictions[0].label == samples[2].label


def test_predict_a_url_is_fetched_by_the_server(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    routes = {"/d.png": (200, {"Content-Type": "image/png"}, samples[3].png)}
    with image_host(routes) as host:
        assert client.predict(f"{host}/d.png").predictions[0].label == samples[3].label


def test_a_refused_url_raises_the_error_body(client: MlApiClient) -> None:
    with pytest.raises(ApiError) as caught:
        client.predict("http://[::1]:9/x.png")
    assert caught.value.status_code == 403
    assert caught.value.code == "URL_NOT_ALLOWED"
    assert caught.value.body.path == "/api/v1/predict"


def test_bytes_that_are_no_image_raise_invalid_image(client: MlApiClient, served: Server) -> None:
    with pytest.raises(ApiError) as caught:
        client.predict(b"certainly not an image", request_id="sync-not-an-image")
    assert (caught.value.status_code, caught.value.code) == (400, "INVALID_IMAGE")
    assert caught.value.request_id == "sync-not-an-image"
    # Unrecognised bytes go as multipart, so the server judges the bytes (not a 415 on a made-up type).
    [line] = settle_access_lines(served, "sync-not-an-image", quiet_s=0.2)
    assert line["path"] == "/api/v1/predict/upload"


def test_unknown_model_raises_model_not_found(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    with pytest.raises(ApiError) as caught:
        client.predict(samples[0].png, model="no-such-model")
    assert (caught.value.status_code, caught.value.code) == (404, "MODEL_NOT_FOUND")
    with pytest.raises(ApiError) as caught:
        client.predict(samples[0].png, version="99")
    assert caught.value.code == "MODEL_NOT_FOUND"


def test_predict_batch_keeps_order_and_per_item_errors(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    results = client.predict_batch([samples[0].png, b"nope", samples[1].png], top_k=2)
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].prediction is not None and results[0].prediction.predictions[0].label == samples[0].label
    assert results[1].error is not None and results[1].error.error == "INVALID_IMAGE" and not results[1].ok
    assert results[2].prediction is not None and len(results[2].prediction.predictions) == 2


def test_stream_yields_every_image_once(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    images = [d.png for d in samples[:5]] + [b"not an image"]
    results = list(client.stream(images, top_k=1))
    assert sorted(r.index for r in results) == list(range(6))
    by_index = {r.index: r for r in results}
    for index, digit in enumerate(samples[:5]):
        prediction = by_index[index].prediction
        assert prediction is not None and prediction.predictions[0].label == digit.label
    assert by_index[5].error is not None and by_index[5].error.error == "INVALID_IMAGE"


def test_stream_refused_before_it_starts_raises(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    with pytest.raises(ApiError) as caught:
        list(client.stream([samples[0].png], model="no-such-model"))
    assert caught.value.code == "MODEL_NOT_FOUND"


def test_embed(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    result = client.embed(samples[0].png)
    assert isinstance(result, EmbedResponse)
    assert result.dim == len(result.embedding) > 0
    assert abs(sum(x * x for x in result.embedding) - 1.0) < 1e-3


def test_submit_wait_and_result(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    accepted = client.submit(samples[4].png, top_k=2)
    assert isinstance(accepted, JobAccepted) and accepted.status == "pending"
    assert accepted.status_url == f"/api/v1/jobs/{accepted.job_id}"
    final = client.wait(accepted.job_id, timeout=60)
    assert isinstance(final, JobStatus) and final.status == "completed"
    assert final.result is not None and final.result.predictions[0].label == samples[4].label
    assert client.job(accepted.job_id).status == "completed"
    assert client.result(accepted.job_id, timeout=60).predictions[0].label == samples[4].label


def test_same_idempotency_key_gives_the_same_job(client: MlApiClient, samples: tuple[Digit, ...]) -> None:
    first = client.submit(samples[5].png, idempotency_key="sync-idem-1")
    again = client.submit(samples[5].png, idempotency_key="sync-idem-1")
    other = client.submit(samples[5].png)
    assert first.job_id == again.job_id
    assert other.job_id != first.job_id


def test_a_failed_job_raises_with_its_error_body(client: MlApiClient) -> None:
    accepted = client.submit(b"not an image")
    assert client.wait(accepted.job_id, timeout=60).status == "failed"
    with pytest.raises(JobFailedError) as caught:
        client.result(accepted.job_id, timeout=60)
    assert caught.value.body.error == "INVALID_IMAGE"


def test_unknown_job_raises_job_not_found(client: MlApiClient) -> None:
    for call in (client.job, client.wait):
        with pytest.raises(ApiError) as caught:
            call("no-such-job")
        assert (caught.value.status_code, caught.value.code) == (404, "JOB_NOT_FOUND")


def test_models_health_ready(client: MlApiClient) -> None:
    models = client.models()
    assert isinstance(models, ModelsResponse) and models.default == "digits"
    assert [(m.name, m.version, m.loaded) for m in models.models] == [("digits", "1", True)]
    health = client.health()
    assert isinstance(health, HealthResponse) and health.status == "healthy" and health.model_loaded
    assert client.ready() is True


def test_api_key_is_sent_and_a_wrong_one_is_refused(keyed: Server, samples: tuple[Digit, ...]) -> None:
    with MlApiClient(keyed.base, api_key=API_KEY) as good:
        assert good.predict(samples[0].png).predictions[0].label == samples[0].label
        assert good.models().default == "digits"
    with MlApiClient(keyed.base, api_key="wrong") as bad:
        with pytest.raises(ApiError) as caught:
            bad.predict(samples[0].png, request_id="sync-wrong-key")
        assert (caught.value.status_code, caught.value.code) == (401, "UNAUTHORIZED")
        # Health endpoints never need a key.
        assert bad.health().status == "healthy"
    # A 4xx is never retried: one attempt on the server.
    assert len(settle_access_lines(keyed, "sync-wrong-key", quiet_s=1.0)) == 1
    with MlApiClient(keyed.base) as none, pytest.raises(ApiError):
        none.models()


def test_unreachable_server_raises_connection_error() -> None:
    with MlApiClient(f"http://127.0.0.1:{free_port()}", retries=1) as client:
        with pytest.raises(MlApiConnectionError):
            client.health()
        with pytest.raises(MlApiConnectionError):
            client.predict(b"\x89PNG\r\n\x1a\n")


def test_a_missing_file_is_the_callers_error(client: MlApiClient, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        client.predict(tmp_path / "missing.png")
    with pytest.raises(TypeError):
        client.predict(42)  # type: ignore[arg-type]

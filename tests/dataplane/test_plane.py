"""The data plane driven directly, as every front end drives it: plain results and ServiceErrors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from service.dataplane.plane import DataPlane
from service.dataplane.sources import ImageUrl, ModelRef
from service.dataplane.status import DrainState
from service.errors import ErrorCode, InvalidImage, InvalidRequest, JobNotFound, ModelNotFound, ServiceError
from service.inference.results import Classification
from service.observability.metrics import InferenceMetrics
from tests.conftest import make_settings
from tests.imagehost import image_host
from tests.inprocess import bundled_model, classify_in_process

pytestmark = pytest.mark.anyio


@pytest.fixture
async def dataplane() -> AsyncIterator[DataPlane]:
    settings = make_settings(url_fetch_allowed_networks=["127.0.0.0/8"], max_batch_items=4)
    plane = DataPlane.build(
        settings, tracer=trace.get_tracer("tests"), metrics=InferenceMetrics(CollectorRegistry()), drain=DrainState()
    )
    await plane.start()
    await plane.registry.wait_started()
    try:
        yield plane
    finally:
        await plane.close()


async def test_classify_returns_the_models_top_classes_as_plain_data(
    dataplane: DataPlane, digit_pngs: list[bytes]
) -> None:
    result = await dataplane.classify(digit_pngs[0], ModelRef(), top_k=3)
    expected = classify_in_process(bundled_model(), [digit_pngs[0]], top_k=3)[0]
    assert isinstance(result, Classification)
    assert (result.model_name, result.model_version) == ("digits", "1")
    assert [p.class_id for p in result.predictions] == [p.class_id for p in expected.predictions]
    assert result.predictions[0].confidence == pytest.approx(expected.predictions[0].confidence, abs=1e-5)


async def test_an_unknown_model_fails_before_any_url_is_fetched(dataplane: DataPlane, digit_pngs: list[bytes]) -> None:
    served: list[str] = []
    with image_host({"/d.png": (200, {"Content-Type": "image/png"}, digit_pngs[0])}, served=served) as host:
        url = ImageUrl(f"{host}/d.png")
        for call in (
            dataplane.classify(url, ModelRef("nope")),
            dataplane.embed(url, ModelRef("nope")),
            dataplane.classify_many([url], ModelRef("digits", "9")),
            dataplane.submit_job(url, ModelRef("nope"), top_k=1, request_id="r"),
        ):
            with pytest.raises(ModelNotFound):
                await call
        assert served == []
        assert (await dataplane.classify(url, ModelRef())).model_name == "digits"
        assert served == ["/d.png"]


async def test_classify_many_keeps_each_items_outcome_in_place(dataplane: DataPlane, digit_pngs: list[bytes]) -> None:
    refused = InvalidImage("image_base64 is not valid base64")
    outcomes = await dataplane.classify_many([digit_pngs[0], b"not an image", refused, digit_pngs[1]], ModelRef())
    assert [type(o) for o in outcomes] == [Classification, InvalidImage, InvalidImage, Classification]
    assert outcomes[2] is refused
    with pytest.raises(InvalidRequest) as too_many:
        await dataplane.classify_many([digit_pngs[0]] * 5, ModelRef())
    assert (too_many.value.code, too_many.value.field) == (ErrorCode.VALIDATION_ERROR, ("images",))


async def test_a_stream_yields_every_index_once_with_its_outcome(dataplane: DataPlane, digit_pngs: list[bytes]) -> None:
    stream = await dataplane.classify_stream([digit_pngs[2], b"junk", digit_pngs[3]], ModelRef(), top_k=1)
    seen = {index: outcome async for index, outcome in stream}
    assert sorted(seen) == [0, 1, 2]
    assert isinstance(seen[0], Classification) and isinstance(seen[2], Classification)
    assert isinstance(seen[1], ServiceError) and seen[1].code is ErrorCode.INVALID_IMAGE


async def test_a_job_runs_through_the_same_path_and_keeps_its_request_id(
    dataplane: DataPlane, digit_pngs: list[bytes]
) -> None:
    record = await dataplane.submit_job(digit_pngs[0], ModelRef(), top_k=2, request_id="req-job")
    states = [r.status async for r in await dataplane.watch_job(record.job_id)]
    final = await dataplane.job(record.job_id)
    assert states[-1] == "completed"
    assert final.request_id == "req-job"
    assert final.result is not None and len(final.result.predictions) == 2
    assert final.result.predictions == (await dataplane.classify(digit_pngs[0], ModelRef(), top_k=2)).predictions
    with pytest.raises(JobNotFound):
        await dataplane.job("0" * 32)

"""Shadow traffic (ML_API_SHADOW): agreement between versions, background priority, shedding, and a
shadow version that cannot load never touching the primary answers."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.dataplane.plane import DataPlane
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio

ONE = {"name": "digits", "version": "1"}
PAIR = {"model": "digits", "primary_version": "1"}


def shadow_settings(second: dict[str, Any], rate: float = 1.0, **overrides: Any) -> Any:
    # Room for every copy of a 10-image batch (the default bound, 8, would drop some).
    overrides = {"shadow_max_inflight": 64, **overrides}
    return make_settings(
        models=[ONE, second], shadow={"digits": {"version": second["version"], "rate": rate}}, **overrides
    )


def random_resnet(tmp_path: Path, version: str) -> dict[str, Any]:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(i) for i in range(10)) + "\n")
    return {
        "name": "digits",
        "version": version,
        "source": "torchvision",
        "arch": "resnet18",
        "pretrained": False,
        "seed": 3,
        "labels": str(labels),
        "input_size": 32,
        "resize_size": 32,
    }


def samples(text: str, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(text: str, name: str, **labels: str) -> float:
    return sum(samples(text, name, **labels).values())


async def shadow_loaded(plane: DataPlane, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while plane.registry.loaded_entry("digits", version) is None:
        assert time.monotonic() < deadline, f"shadow version {version} did not load"
        await anyio.sleep(0.05)


async def settled(plane: DataPlane, client: httpx.AsyncClient, mirrored: int, timeout: float = 60) -> str:
    """The metrics once ``mirrored`` copies have an outcome and none is in flight."""
    deadline = time.monotonic() + timeout
    while True:
        text = (await client.get("/metrics")).text
        if plane.shadow.inflight == 0 and total(text, "ml_api_shadow_requests_total") >= mirrored:
            return text
        assert time.monotonic() < deadline, "shadow copies did not finish"
        await anyio.sleep(0.05)


async def classify_all(client: httpx.AsyncClient, pngs: list[bytes]) -> list[dict[str, Any]]:
    bodies = []
    for png in pngs[:20]:
        response = await client.post("/api/v1/predict/upload", content=png, headers={"content-type": "image/png"})
        assert response.status_code == 200
        bodies.append(response.json())
    batch = {"images": [{"image_base64": base64.b64encode(p).decode()} for p in pngs[20:30]]}
    response = await client.post("/api/v1/predict/batch", json=batch)
    assert response.status_code == 200
    bodies.extend(response.json()["results"])
    return bodies


async def test_the_same_weights_agree_on_every_image(digit_pngs: list[bytes]) -> None:
    app = create_app(shadow_settings({"name": "digits", "version": "2"}))
    async with running_app(app) as client:
        plane: DataPlane = app.state.dataplane
        await shadow_loaded(plane, "2")
        bodies = await classify_all(client, digit_pngs)
        # The shadow version gets copies only: every unversioned answer is the primary's.
        assert {b["model_version"] for b in bodies} == {"1"}
        text = await settled(plane, client, len(bodies))
    pair = {**PAIR, "shadow_version": "2"}
    assert total(text, "ml_api_shadow_requests_total", **pair, outcome="success") == 30
    assert total(text, "ml_api_shadow_agreement_total", **pair, agreed="true") == 30
    assert total(text, "ml_api_shadow_agreement_total", **pair, agreed="false") == 0
    assert total(text, "ml_api_shadow_duration_seconds_count", **pair) == 30
    # Shadow work queued at background priority; version 2's only interactive image is its warm-up.
    v2 = {"model": "digits", "version": "2"}
    assert total(text, "ml_api_queue_wait_seconds_count", **v2, priority="background") == 30
    assert total(text, "ml_api_queue_wait_seconds_count", **v2, priority="interactive") == 1
    # Both versions' class distributions count the same classes.
    one = samples(text, "ml_api_predicted_class_total", model="digits", version="1")
    two = samples(text, "ml_api_predicted_class_total", model="digits", version="2")
    assert sum(one.values()) == 30
    assert {dict(k)["class_id"]: v for k, v in one.items()} == {dict(k)["class_id"]: v for k, v in two.items()}


async def test_a_different_model_disagrees(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    app = create_app(shadow_settings(random_resnet(tmp_path, "random")))
    async with running_app(app) as client:
        plane: DataPlane = app.state.dataplane
        await shadow_loaded(plane, "random")
        bodies = await classify_all(client, digit_pngs)
        text = await settled(plane, client, len(bodies))
    pair = {**PAIR, "shadow_version": "random"}
    agreed = total(text, "ml_api_shadow_agreement_total", **pair, agreed="true")
    disagreed = total(text, "ml_api_shadow_agreement_total", **pair, agreed="false")
    assert agreed + disagreed == 30
    assert disagreed > 0, "random weights agreed with the trained digits model on every image"
    assert agreed / (agreed + disagreed) < 1.0


async def test_a_shadow_version_that_cannot_load_never_touches_the_primary(
    tmp_path: Path, digit_pngs: list[bytes]
) -> None:
    broken = {
        "name": "digits",
        "version": "2",
        "source": "file",
        "path": str(tmp_path / "absent.pt"),
        "labels": str(tmp_path / "absent.txt"),
    }
    app = create_app(shadow_settings(broken))
    async with running_app(app) as client:  # ready: a shadow candidate is not needed to serve
        plane: DataPlane = app.state.dataplane
        deadline = time.monotonic() + 30
        while (await client.get("/api/v1/models")).json()["models"][1]["state"] != "failed":
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)
        bodies = await classify_all(client, digit_pngs)
        assert {b["model_version"] for b in bodies} == {"1"}
        text = await settled(plane, client, len(bodies))
        assert (await client.get("/health/ready")).status_code == 200
    pair = {**PAIR, "shadow_version": "2"}
    assert total(text, "ml_api_shadow_requests_total", **pair, outcome="unavailable") == 30
    assert total(text, "ml_api_shadow_agreement_total") == 0


async def test_shadow_copies_beyond_the_in_flight_bound_are_dropped(digit_pngs: list[bytes]) -> None:
    app = create_app(shadow_settings({"name": "digits", "version": "2"}, shadow_max_inflight=1))
    async with running_app(app) as client:
        plane: DataPlane = app.state.dataplane
        await shadow_loaded(plane, "2")

        async def one(png: bytes) -> int:
            response = await client.post("/api/v1/predict/upload", content=png, headers={"content-type": "image/png"})
            return response.status_code

        statuses = await asyncio.gather(*(one(p) for p in digit_pngs[:40]))
        assert set(statuses) == {200}
        text = await settled(plane, client, 40)
    pair = {**PAIR, "shadow_version": "2"}
    dropped = total(text, "ml_api_shadow_requests_total", **pair, outcome="dropped")
    succeeded = total(text, "ml_api_shadow_requests_total", **pair, outcome="success")
    assert dropped > 0 and succeeded > 0 and dropped + succeeded == 40


async def test_a_zero_rate_or_no_shadow_mirrors_nothing(digit_pngs: list[bytes]) -> None:
    app = create_app(shadow_settings({"name": "digits", "version": "2"}, rate=0.0))
    async with running_app(app) as client:
        await classify_all(client, digit_pngs)
        text = (await client.get("/metrics")).text
    assert total(text, "ml_api_shadow_requests_total") == 0

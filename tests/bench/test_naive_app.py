"""The naive app serves the same seeded network as the service, and its three bodies."""

from __future__ import annotations

import base64
import importlib
import sys

import httpx
import pytest
import torch

from bench.images import make_jpeg
from service.inference.sources import build_network
from service.settings import ModelSpec

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def naive(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BENCH_NAIVE_MODEL", "resnet18")
    monkeypatch.setenv("BENCH_NAIVE_SEED", "3")
    sys.modules.pop("bench.naive_app", None)
    module = importlib.import_module("bench.naive_app")
    yield module
    sys.modules.pop("bench.naive_app", None)


def test_the_naive_network_is_the_services_for_the_same_seed(naive) -> None:  # type: ignore[no-untyped-def]
    spec = ModelSpec(name="r", source="torchvision", arch="resnet18", weights="IMAGENET1K_V1", pretrained=False)
    theirs = naive.model.state_dict()
    for seed, same in ((3, True), (0, False)):
        network, _, _ = build_network(spec.model_copy(update={"seed": seed}))
        ours = network.state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours) is same


async def test_every_body_gives_the_same_answer(naive) -> None:  # type: ignore[no-untyped-def]
    image = make_jpeg(96, 72)
    transport = httpx.ASGITransport(app=naive.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://naive") as client:
        raw = await client.post("/api/v1/predict/upload", content=image, headers={"Content-Type": "image/jpeg"})
        multipart = await client.post("/api/v1/predict/upload", files={"file": ("i.jpg", image, "image/jpeg")})
        as_json = await client.post("/api/v1/predict", json={"image_base64": base64.b64encode(image).decode()})
    answers = [r.json()["predictions"][0]["class_id"] for r in (raw, multipart, as_json)]
    assert all(r.status_code == 200 for r in (raw, multipart, as_json)) and len(set(answers)) == 1

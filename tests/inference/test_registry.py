"""Model registry: versions, A/B split, background start-up, lazy load once; settings validation."""

from __future__ import annotations

import asyncio
import math
import os
import random
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch
from opentelemetry import trace

from service.app import create_app
from service.inference import device
from service.inference.digits import DigitsCNN, bundled_weights_path
from service.inference.registry import LoadState, ModelRegistry
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio

TWO_VERSIONS = [{"name": "digits", "version": "1"}, {"name": "digits", "version": "2"}]


async def test_an_unlisted_version_is_not_loaded_until_first_use_and_loads_once(digit_pngs: list[bytes]) -> None:
    settings = make_settings(
        models=[{"name": "digits", "version": "1"}, {"name": "other", "version": "a"}], default_model="digits"
    )
    app = create_app(settings)
    async with running_app(app) as client:
        registry: ModelRegistry = app.state.dataplane.registry
        other = next(e for e in registry.entries() if e.spec.name == "other")
        assert other.state is LoadState.NOT_LOADED
        listed = (await client.get("/api/v1/models")).json()
        assert {(m["name"], m["loaded"]) for m in listed["models"]} == {("digits", True), ("other", False)}
        entries = await asyncio.gather(*(registry.get("other", "a") for _ in range(20)))
        assert {id(e.model) for e in entries} == {id(other.model)}
        assert other.state is LoadState.LOADED
        response = await client.post(
            "/api/v1/predict/upload?model=other", content=digit_pngs[0], headers={"content-type": "image/png"}
        )
        assert response.json()["model_name"] == "other"


async def test_startup_and_readiness_report_progress_while_liveness_answers_at_once() -> None:
    app = create_app(make_settings())
    async with running_app(app, wait_ready=False) as client:
        live = await client.get("/health/live")
        assert live.status_code == 200
        registry = app.state.dataplane.registry
        await registry.wait_started()
        assert (await client.get("/health/startup")).status_code == 200
        assert (await client.get("/health/ready")).json() == {"status": "ready"}
        assert registry.warmed_up


async def test_explicit_version_wins_and_the_traffic_split_follows_its_weights() -> None:
    settings = make_settings(models=TWO_VERSIONS, traffic_split={"digits": {"1": 9, "2": 1}})
    registry = ModelRegistry(settings, tracer=trace.get_tracer("tests"), rng=random.Random(7))
    assert registry.resolve("digits", "2") == ("digits", "2")
    counts = Counter(registry.resolve(None, None)[1] for _ in range(5000))
    assert 0.87 < counts["1"] / 5000 < 0.93
    assert counts["1"] + counts["2"] == 5000


async def test_the_served_version_is_recorded_in_each_response(digit_pngs: list[bytes]) -> None:
    settings = make_settings(models=TWO_VERSIONS, traffic_split={"digits": {"1": 1, "2": 1}})
    async with running_app(create_app(settings)) as client:
        versions = Counter()
        for _ in range(30):
            response = await client.post(
                "/api/v1/predict/upload", content=digit_pngs[0], headers={"content-type": "image/png"}
            )
            versions[response.json()["model_version"]] += 1
        models = (await client.get("/api/v1/models")).json()["models"]
    assert set(versions) == {"1", "2"}
    assert {m["version"]: m["traffic_weight"] for m in models} == {"1": 0.5, "2": 0.5}


async def test_a_state_dict_file_with_a_labels_file_is_served(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    # A torchvision architecture trained elsewhere: here resnet18 with 3 classes and random weights.
    import torchvision

    network = torchvision.models.resnet18(num_classes=3)
    torch.save(network.state_dict(), tmp_path / "r18.pt")
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    spec = {
        "name": "pets",
        "version": "1",
        "source": "file",
        "format": "state_dict",
        "arch": "resnet18",
        "path": "r18.pt",
        "labels": str(tmp_path / "labels.txt"),
        "input_size": 64,
    }
    settings = make_settings(models=[spec], default_model="pets", weights_dir=str(tmp_path))
    async with running_app(create_app(settings)) as client:
        response = await client.post(
            "/api/v1/predict/upload", content=digit_pngs[0], headers={"content-type": "image/png"}
        )
    assert response.status_code == 200
    assert {p["label"] for p in response.json()["predictions"]} == {"cat", "dog", "bird"}


async def test_torchvision_weights_missing_from_the_cache_log_the_fetch_command_but_probes_show_no_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = {"name": "r18", "version": "1", "source": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}
    app = create_app(make_settings(models=[spec], default_model="r18"))
    async with running_app(app, wait_ready=False) as client:
        await app.state.dataplane.registry.wait_started()
        body = (await client.get("/health/ready")).json()
    assert body["error"] == "MODEL_NOT_LOADED"
    assert body["message"] == "the default model failed to load; the server log says why"
    assert str(tmp_path) not in str(body)
    logged = [r.getMessage() for r in caplog.records if r.name == "service.inference.registry"]
    assert any("python -m service.cli fetch-weights ResNet18_Weights.IMAGENET1K_V1" in m for m in logged)


def test_torchvision_random_weights_keep_the_weights_metadata() -> None:
    from service.inference.sources import load_model
    from service.settings import ModelSpec

    spec = ModelSpec(name="r18", source="torchvision", arch="resnet18", weights="IMAGENET1K_V1", pretrained=False)
    model = load_model(spec, torch.device("cpu"))
    assert len(model.labels) == 1000 and model.labels[0] == "tench"
    assert (model.preprocessing.resize_size, model.preprocessing.crop_size) == (256, 224)
    assert model.embedding_dim == 512


def test_the_committed_bundled_weights_load_into_the_architecture() -> None:
    network = DigitsCNN()
    network.load_state_dict(torch.load(bundled_weights_path(), weights_only=True))
    assert bundled_weights_path().stat().st_size < 1_000_000


async def test_models_endpoint_lists_every_version(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/models")).json()
    assert body == {
        "default": "digits",
        "models": [
            {
                "name": "digits",
                "version": "1",
                "labels_count": 10,
                "device": "cpu",
                "loaded": True,
                "default": True,
                "state": "loaded",
                "traffic_weight": None,
                "backend": "torch",
                "instances": body["models"][0]["instances"],
                "shadow_rate": None,
            }
        ],
        "config": {
            "source": "environment",
            "path": None,
            "generation": 1,
            "loaded_at": body["config"]["loaded_at"],
            "in_sync": True,
            "last_outcome": None,
            "last_attempt_at": None,
            "last_error": None,
        },
    }
    # One instance per thread of this machine's budget (the CPU quota, else the core count).
    assert body["models"][0]["instances"] == max(1, math.floor(device.cpu_quota() or os.cpu_count() or 1))

"""Health as the probes and dashboards see it: healthy, degraded on a missing GPU, readiness rules."""

from __future__ import annotations

import pytest
import torch

from service.app import create_app
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio


async def test_health_is_degraded_when_cuda_is_configured_but_absent() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: ML_API_DEVICE=cuda is satisfied")
    async with running_app(create_app(make_settings(device="cuda"))) as client:
        body = (await client.get("/health")).json()
        ready = await client.get("/health/ready")
    assert (body["status"], body["model_loaded"], body["gpu_available"]) == ("degraded", True, False)
    assert [m["device"] for m in body["models"]] == ["cpu"]
    assert ready.status_code == 200  # degraded still serves, on CPU


async def test_health_is_healthy_on_cpu() -> None:
    async with running_app(create_app(make_settings(device="cpu"))) as client:
        body = (await client.get("/health")).json()
    assert (body["status"], body["model_loaded"]) == ("healthy", True)


async def test_readiness_fails_when_cuda_is_required_but_absent() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: ML_API_DEVICE=cuda is satisfied")
    app = create_app(make_settings(device="cuda", device_required=True))
    async with running_app(app, wait_ready=False) as client:
        await app.state.dataplane.registry.wait_started()
        ready = await client.get("/health/ready")
        metrics = (await client.get("/metrics")).text
    assert ready.status_code == 503
    assert ready.json()["error"] == "MODEL_NOT_LOADED"
    assert ready.json()["message"] == "ML_API_DEVICE=cuda but no usable GPU, and ML_API_DEVICE_REQUIRED is set"
    assert "ml_api_device_fallback 1.0" in metrics.splitlines()


async def test_the_device_fallback_gauge_is_zero_when_the_device_is_what_was_asked() -> None:
    async with running_app(create_app(make_settings(device="cpu"))) as client:
        metrics = (await client.get("/metrics")).text
    assert "ml_api_device_fallback 0.0" in metrics.splitlines()

"""Reloading the model set from ML_API_MODELS_FILE while serving, in one process (the live server's
version of these, under load and with process memory, is tests/dataplane/test_reload_live.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.dataplane.plane import DataPlane
from service.dataplane.sources import ModelRef
from service.errors import ModelNotFound
from service.inference.model_config import parse_model_file
from service.inference.registry import LoadState
from tests.conftest import make_settings, running_app

pytestmark = pytest.mark.anyio

ONE = [{"name": "digits", "version": "1"}]
TWO = [{"name": "digits", "version": "2"}]


def write_atomically(path: Path, content: Any) -> None:
    """Replace ``path`` as editors and kubelet do: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content if isinstance(content, str) else json.dumps(content))
    os.replace(tmp, path)


def labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(str(i) for i in range(10)) + "\n")
    return path


def random_resnet(tmp_path: Path, version: str, seed: int = 0) -> dict[str, Any]:
    """A torchvision resnet18 with seeded random weights on the digits labels: slower to load than the
    bundled CNN (so a load can be watched) and 45 MB of parameters (so its release can be measured)."""
    return {
        "name": "digits",
        "version": version,
        "source": "torchvision",
        "arch": "resnet18",
        "pretrained": False,
        "seed": seed,
        "labels": str(labels_file(tmp_path)),
        "input_size": 32,
        "resize_size": 32,
    }


async def upload(client: httpx.AsyncClient, png: bytes, **params: str) -> httpx.Response:
    return await client.post(
        "/api/v1/predict/upload", content=png, headers={"content-type": "image/png"}, params=params
    )


async def models(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/api/v1/models")).json()
    return body


async def wait_for(predicate: Any, timeout: float = 30.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def app_with_file(path: Path, content: Any, **overrides: Any) -> Any:
    write_atomically(path, content)
    return create_app(make_settings(models_file=str(path), **{"models_file_poll_s": 0.1, **overrides}))


async def test_a_new_version_serves_only_once_loaded_and_warm(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    path = tmp_path / "models.json"
    app = app_with_file(path, ONE, models_file_poll_s=300)
    async with running_app(app) as client:
        plane: DataPlane = app.state.dataplane
        registry = plane.registry
        new = parse_model_file(json.dumps([*ONE, random_resnet(tmp_path, "2")]), plane.settings)
        reload = asyncio.ensure_future(plane.reloader.apply(new))
        seen: set[str] = set()
        during = 0
        while not reload.done():
            # While version 2 loads and warms up, every resolution is the old set's: version 1.
            seen.add(registry.resolve(None, None)[1])
            during += 1
            assert registry.generation == 1
            await asyncio.sleep(0.001)
        result = await reload
        assert result.outcome == "applied" and result.loaded == ("digits:2",)
        assert during > 10 and seen == {"1"}
        assert registry.generation == 2
        entry = registry.loaded_entry("digits", "2")
        assert entry is not None and entry.batcher is not None and entry.batcher.stats.batches >= 1  # warmed up
        assert (await upload(client, digit_pngs[0])).json()["model_version"] == "2"


async def test_a_removed_version_is_drained_unloaded_and_its_series_removed(
    tmp_path: Path, digit_pngs: list[bytes]
) -> None:
    path = tmp_path / "models.json"
    app = app_with_file(path, [random_resnet(tmp_path, "big"), *ONE], models_file_poll_s=300)
    async with running_app(app) as client:
        plane: DataPlane = app.state.dataplane
        # version 1 (listed last) serves unversioned requests; "big" serves the ones naming it.
        assert (await upload(client, digit_pngs[0], model_version="big")).status_code == 200
        big = plane.registry.loaded_entry("digits", "big")
        assert big is not None and big.model is not None
        model_ref, backend_ref = weakref.ref(big.model), weakref.ref(big.model.backend)  # type: ignore[arg-type]
        del big
        before = (await client.get("/metrics")).text
        assert any(dict(k).get("version") == "big" for k in series(before, "ml_api_model_loaded"))

        write_atomically(path, ONE)
        result = await plane.watcher.check()  # type: ignore[union-attr]
        assert result is not None and result.outcome == "applied" and result.removed == ("digits:big",)
        assert (await upload(client, digit_pngs[0], model_version="big")).json()["error"] == "MODEL_NOT_FOUND"
        await plane.reloader.wait_unloaded(timeout=30)
        # Start-up froze the heap (gc.freeze); the model is gone anyway: nothing keeps it.
        assert model_ref() is None and backend_ref() is None
        text = (await client.get("/metrics")).text
        for name in (
            "ml_api_model_loaded",
            "ml_api_model_instances",
            "ml_api_predictions_total",
            "ml_api_inference_duration_seconds_count",
            "ml_api_queue_depth",
            "ml_api_predicted_class_total",
        ):
            versions = {dict(k).get("version") for k in series(text, name)}
            assert "big" not in versions, name
        assert {dict(k)["version"] for k in series(text, "ml_api_model_loaded")} == {"1"}
        assert [m["version"] for m in (await models(client))["models"]] == ["1"]


async def test_a_bad_file_keeps_serving_and_is_reported(
    tmp_path: Path, digit_pngs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "models.json"
    app = app_with_file(path, ONE)
    async with running_app(app) as client:
        for content, error in (
            ("{broken", "not valid JSON"),
            ([{"name": "digits", "version": "1", "source": "nowhere"}], "models.0.source"),
            ({"models": TWO, "default_model": "missing"}, "default_model 'missing'"),
        ):
            with caplog.at_level(logging.ERROR, logger="service.dataplane.reload"):
                write_atomically(path, content)

                async def rejected(error: str = error) -> dict[str, Any] | None:
                    config: dict[str, Any] = (await models(client))["config"]
                    return config if config["last_error"] and error in config["last_error"] else None

                config = await wait_for(rejected, what=f"the file to be rejected ({error})")
            assert config["last_outcome"] == "invalid" and config["in_sync"] is False
            assert config["generation"] == 1
            assert any(error in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
            response = await upload(client, digit_pngs[0])
            assert response.status_code == 200 and response.json()["model_version"] == "1"
            assert (await client.get("/health/ready")).status_code == 200
        text = (await client.get("/metrics")).text
        assert series(text, "ml_api_model_config_reloads_total")[(("outcome", "invalid"),)] == 3
        assert series(text, "ml_api_model_config_in_sync")[()] == 0
        # Reverting to what serves is in sync again, without loading anything.
        write_atomically(path, ONE)
        await wait_for(
            lambda: _in_sync(client),
            what="the reverted file to be in sync",
        )
        assert series((await client.get("/metrics")).text, "ml_api_model_config_generation")[()] == 1


async def _in_sync(client: httpx.AsyncClient) -> bool:
    return bool((await models(client))["config"]["in_sync"])


async def test_a_failing_load_keeps_serving_and_is_reported(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    path = tmp_path / "models.json"
    app = app_with_file(path, ONE)
    async with running_app(app) as client:
        broken = {
            "name": "digits",
            "version": "2",
            "source": "file",
            "path": str(tmp_path / "absent.pt"),
            "labels": str(labels_file(tmp_path)),
        }
        write_atomically(path, [*ONE, broken])

        async def failed() -> dict[str, Any] | None:
            config: dict[str, Any] = (await models(client))["config"]
            return config if config["last_outcome"] == "failed" else None

        config = await wait_for(failed, what="the failed reload")
        assert "digits:2 failed to load" in config["last_error"] and "absent.pt" in config["last_error"]
        assert config["generation"] == 1 and config["in_sync"] is False
        listed = (await models(client))["models"]
        assert [(m["version"], m["state"]) for m in listed] == [("1", "loaded")]
        assert (await upload(client, digit_pngs[0])).json()["model_version"] == "1"
        text = (await client.get("/metrics")).text
        assert series(text, "ml_api_model_config_reloads_total")[(("outcome", "failed"),)] == 1
        # The version that never served leaves no series behind.
        assert {dict(k)["version"] for k in series(text, "ml_api_model_loaded")} == {"1"}


async def test_a_configmap_symlink_swap_is_picked_up(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    # kubelet's layout: models.json -> ..data/models.json, ..data -> ..<timestamp>; an update writes a
    # new timestamped directory and renames a new ..data symlink over the old one.
    mount = tmp_path / "mount"
    first = mount / "..2026_01_01_00_00_00.000000001"
    first.mkdir(parents=True)
    (first / "models.json").write_text(json.dumps(ONE))
    (mount / "..data").symlink_to(first.name)
    (mount / "models.json").symlink_to("..data/models.json")
    app = create_app(make_settings(models_file=str(mount / "models.json"), models_file_poll_s=0.1))
    async with running_app(app) as client:
        assert (await upload(client, digit_pngs[0])).json()["model_version"] == "1"
        second = mount / "..2026_01_01_00_01_00.000000002"
        second.mkdir()
        (second / "models.json").write_text(json.dumps(TWO))
        (mount / "..data_tmp").symlink_to(second.name)
        os.replace(mount / "..data_tmp", mount / "..data")

        async def switched() -> bool:
            return (await upload(client, digit_pngs[0])).json().get("model_version") == "2"

        await wait_for(switched, what="the swapped ConfigMap to serve version 2")
        assert (await models(client))["config"]["generation"] == 2


async def test_requests_racing_switches_are_served_by_either_set(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    path = tmp_path / "models.json"
    app = app_with_file(path, ONE, models_file_poll_s=300)
    failures: list[str] = []
    versions: set[str] = set()
    stop = asyncio.Event()

    async with running_app(app) as client:
        plane: DataPlane = app.state.dataplane

        async def worker(index: int) -> None:
            for i in range(2000):  # bounded; stopped by the event long before
                if stop.is_set():
                    return
                png = digit_pngs[(index * 97 + i) % len(digit_pngs)]
                response = await upload(client, png)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                else:
                    versions.add(response.json()["model_version"])

        workers = [asyncio.ensure_future(worker(i)) for i in range(6)]
        for content in (TWO, ONE, [*ONE, *TWO], TWO, ONE):
            write_atomically(path, content)
            result = await plane.watcher.check()  # type: ignore[union-attr]
            assert result is not None and result.outcome == "applied"
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*workers)
        await plane.reloader.wait_unloaded(timeout=30)
        assert plane.registry.generation == 6
    assert not failures, failures[:5]
    assert versions == {"1", "2"}


async def test_a_failed_start_up_is_brought_up_by_a_good_file(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    path = tmp_path / "models.json"
    broken = [{"name": "digits", "version": "1", "source": "file", "path": "/absent.pt", "labels": "/absent.txt"}]
    app = app_with_file(path, broken)
    async with running_app(app, wait_ready=False) as client:
        await app.state.dataplane.registry.wait_started()
        assert (await client.get("/health/ready")).status_code == 503
        write_atomically(path, ONE)

        async def ready() -> bool:
            return (await client.get("/health/ready")).status_code == 200

        await wait_for(ready, what="readiness after the fixed file")
        assert (await upload(client, digit_pngs[0])).json()["model_version"] == "1"
        assert (await client.get("/health")).json()["status"] == "healthy"


async def test_rewriting_the_same_configuration_loads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    app = app_with_file(path, ONE, models_file_poll_s=300)
    async with running_app(app):
        plane: DataPlane = app.state.dataplane
        entry = plane.registry.loaded_entry("digits", "1")
        write_atomically(path, json.dumps(ONE, indent=4) + "\n")
        result = await plane.watcher.check()  # type: ignore[union-attr]
        assert result is not None and not result.changed
        assert await plane.watcher.check() is None  # type: ignore[union-attr]  (same content: not even parsed)
        assert plane.registry.generation == 1 and plane.registry.loaded_entry("digits", "1") is entry
        assert entry is not None and entry.state is LoadState.LOADED


async def test_a_request_resolved_before_a_switch_is_served_by_the_new_set(
    tmp_path: Path, digit_pngs: list[bytes]
) -> None:
    # The two windows of a request racing a switch, made deterministic.
    path = tmp_path / "models.json"
    app = app_with_file(path, ONE, models_file_poll_s=300)
    async with running_app(app):
        plane: DataPlane = app.state.dataplane
        unversioned = plane.resolve(ModelRef())  # what the route's dependency did, before the switch
        pinned = plane.resolve(ModelRef("digits", "1"))
        assert unversioned.version == "1"
        write_atomically(path, TWO)
        assert (await plane.watcher.check()).outcome == "applied"  # type: ignore[union-attr]
        # 1. resolved to the removed version, reaching the data plane after the switch: the new set.
        result = await plane.classify(digit_pngs[0], unversioned)
        assert result.model_version == "2"
        # A request that named the removed version itself gets what any request naming it gets now.
        with pytest.raises(ModelNotFound):
            await plane.classify(digit_pngs[0], pinned)


async def test_an_entry_in_use_is_unloaded_only_after_its_last_request(tmp_path: Path, digit_pngs: list[bytes]) -> None:
    path = tmp_path / "models.json"
    app = app_with_file(path, ONE, models_file_poll_s=300)
    async with running_app(app):
        plane: DataPlane = app.state.dataplane
        # 2. a request holding the old entry (between its lookup and its result, e.g. decoding).
        async with plane.registry.lease("digits", "1") as entry:
            write_atomically(path, TWO)
            assert (await plane.watcher.check()).outcome == "applied"  # type: ignore[union-attr]
            await asyncio.sleep(0.3)
            assert entry.retired and entry.state is LoadState.LOADED and entry.batcher is not None
            assert entry.model is not None
            pre = entry.model.preprocessing
            tensor = torch.zeros((pre.channels, pre.crop_size, pre.crop_size), dtype=torch.uint8)
            (outcome,) = await entry.batcher.submit([tensor], deadline=time.monotonic() + 10)
            assert not isinstance(outcome, Exception)  # its batcher still serves it
        await plane.reloader.wait_unloaded(timeout=30)
        assert entry.state is LoadState.NOT_LOADED and entry.model is None and entry.batcher is None

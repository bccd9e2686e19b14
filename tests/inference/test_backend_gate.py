"""The equivalence gate: a backend that computes other numbers never serves; a missing library says so."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from pathlib import Path

import pytest
import torch

from service.app import create_app
from service.inference.backends.base import NormalisedNetwork
from service.inference.backends.eager import TorchEager
from service.inference.backends.gate import EquivalenceGate, gate_images
from service.inference.model import RunOptions, split_head
from service.inference.sources import ModelLoadError, build_network, load_model
from tests.conftest import make_settings, running_app
from tests.inference.conftest import DIGITS, batch_of, classify, with_backend

CPU = torch.device("cpu")


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.startswith(".")) if cache.exists() else []


def _digits_eager(perturb: float = 0.0) -> TorchEager:
    network, _, pre = build_network(DIGITS)
    body, head = split_head(network.eval())
    assert head is not None
    if perturb:
        with torch.no_grad():
            head.bias[3] += perturb  # type: ignore[index, operator]
    return TorchEager(NormalisedNetwork(body, head, pre), CPU)


def test_gate_images_are_fixed_and_include_flat_and_structured_ones() -> None:
    _, _, pre = build_network(DIGITS)
    images = gate_images(pre)
    assert images.shape == (12, 1, 8, 8) and images.dtype == torch.uint8
    assert torch.equal(images, gate_images(pre))
    assert images[8].eq(0).all() and images[9].eq(255).all()
    assert images[10, 0, 0].tolist() == [0, 36, 73, 109, 146, 182, 219, 255]


def test_the_gate_measures_the_largest_logit_difference_and_counts_top1_changes() -> None:
    reference = _digits_eager()
    _, _, pre = build_network(DIGITS)
    gate = EquivalenceGate(reference, pre, tolerance=1e-3)
    assert gate.check(_digits_eager()).passed

    shifted = _digits_eager(perturb=50.0)  # class 3 wins everywhere
    report = gate.check(shifted)
    images = gate_images(pre)
    with torch.inference_mode():
        expected_top1 = reference.forward(images).logits.argmax(1)
    assert not report.passed
    assert report.max_logit_diff == pytest.approx(50.0, abs=1e-4)
    # Features are untouched; eager itself differs by ~1e-6 between a batch of 12 and a batch of 1.
    assert report.max_feature_diff is not None and report.max_feature_diff < 1e-5
    # Every image whose reference top-1 is not 3 changes, plus the first image run alone.
    assert report.top1_mismatches == int((expected_top1 != 3).sum()) + int(expected_top1[0] != 3)


def test_a_backend_beyond_the_tolerance_is_refused_naming_it_and_the_measured_difference(tmp_path: Path) -> None:
    # ONNX Runtime's convolutions are not bit-identical to oneDNN's (about 1e-6 apart), so a
    # tolerance of 1e-12 is a backend that really computes different numbers, as far as the gate knows.
    spec = with_backend(DIGITS, "onnxruntime", backend_tolerance=1e-12)
    with pytest.raises(ModelLoadError) as raised:
        load_model(spec, CPU, backend_cache_dir=str(tmp_path))
    message = str(raised.value)
    assert message.startswith("model digits:1: backend onnxruntime failed the equivalence gate against torch eager")
    measured = float(re.search(r"max \|logit diff\| ([0-9.e+-]+)", message).group(1))  # type: ignore[union-attr]
    assert 1e-12 < measured < 1e-3
    assert "tolerance 1e-12" in message
    assert _entries(tmp_path) == []  # a refused export is never cached


def test_with_fallback_a_refused_backend_serves_torch_eager_and_logs_why(
    tmp_path: Path, digit_pngs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    spec = with_backend(DIGITS, "onnxruntime", backend_tolerance=1e-12, backend_fallback=True)
    with caplog.at_level(logging.ERROR, logger="service.inference.sources"):
        model = load_model(spec, CPU, backend_cache_dir=str(tmp_path))
    eager = load_model(DIGITS, CPU)
    assert model.backend_name == "torch"
    images = batch_of(eager, digit_pngs[:8])
    assert classify(model, images) == classify(eager, images)
    [record] = [r for r in caplog.records if r.name == "service.inference.sources"]
    assert "backend onnxruntime failed the equivalence gate" in record.getMessage()
    assert "serving torch eager instead" in record.getMessage()


@pytest.mark.parametrize(("backend", "package"), [("onnxruntime", "onnxruntime"), ("openvino", "openvino")])
def test_a_backend_whose_library_is_missing_fails_to_load_saying_which_package(
    backend: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # what `import` sees when the package is not installed
    with pytest.raises(ModelLoadError) as raised:
        load_model(with_backend(DIGITS, backend), CPU, backend_cache_dir=str(tmp_path))
    assert str(raised.value).startswith(
        f"model digits:1: backend {backend} needs the {package} package, which is not installed "
        "(pip install 'ml-api[fast]')"
    )
    assert _entries(tmp_path) == []  # it failed before exporting anything


def test_a_missing_onnx_exporter_fails_to_load_saying_which_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ModelLoadError, match=r"the ONNX export needs the onnxscript package, which is not installed"):
        load_model(with_backend(DIGITS, "onnxruntime"), CPU, backend_cache_dir=str(tmp_path))


@pytest.mark.anyio
async def test_the_service_reports_a_model_refused_by_the_gate_as_not_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = {"name": "digits", "version": "1", "backend": "openvino", "backend_tolerance": 1e-12}
    app = create_app(make_settings(models=[spec], backend_cache_dir=str(tmp_path)))
    async with running_app(app, wait_ready=False) as client:
        await app.state.dataplane.registry.wait_started()
        ready = await client.get("/health/ready")
        models = (await client.get("/api/v1/models")).json()["models"]
    assert ready.status_code == 503
    assert ready.json()["error"] == "MODEL_NOT_LOADED"
    assert [(m["name"], m["state"]) for m in models] == [("digits", "failed")]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "backend openvino failed the equivalence gate against torch eager" in logged


@pytest.mark.anyio
async def test_the_service_serves_through_a_backend_and_caches_its_export_where_configured(
    tmp_path: Path, digit_pngs: list[bytes]
) -> None:
    app = create_app(
        make_settings(
            models=[{"name": "digits", "version": "1", "backend": "onnxruntime"}], backend_cache_dir=str(tmp_path)
        )
    )
    async with running_app(app) as client:
        response = await client.post(
            "/api/v1/predict/upload?top_k=3", content=digit_pngs[0], headers={"content-type": "image/png"}
        )
    assert response.status_code == 200
    eager = load_model(DIGITS, CPU)
    [expected] = eager.run(batch_of(eager, digit_pngs[:1]), [RunOptions(top_k=3)])
    served = response.json()["predictions"]
    assert [p["class_id"] for p in served] == [p.class_id for p in expected.predictions]
    assert [p["confidence"] for p in served] == pytest.approx([p.confidence for p in expected.predictions], abs=1e-5)
    assert [p.name.split("-")[0] for p in _entries(tmp_path)] == ["onnxruntime"]


def _thread_nice_values() -> dict[int, int]:
    values = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            values[int(tid)] = int(stat[stat.rindex(")") + 2 :].split()[16])
    return values


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_thread_pool_of_an_exported_backend_gets_the_inference_threads_niceness(
    backend: str, tmp_path: Path
) -> None:
    before = _thread_nice_values()
    model = load_model(with_backend(DIGITS, backend), CPU, backend_cache_dir=str(tmp_path), threads=2, niceness=7)
    new = {tid: nice for tid, nice in _thread_nice_values().items() if tid not in before}
    assert model.backend_name == backend
    assert 7 in new.values()  # the runtime's worker threads, started in the niced build thread
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before[threading.get_native_id()]

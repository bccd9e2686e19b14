"""The export cache: reused across loads, keyed so stale exports never match, and never trusted blindly."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from service.inference.backends.base import NormalisedNetwork
from service.inference.backends.exported import MODEL_FILE, export_key
from service.inference.backends.gate import gate_images
from service.inference.backends.onnx_export import export_onnx
from service.inference.model import split_head
from service.inference.sources import build_network, load_model
from tests.conftest import ROOT
from tests.inference.conftest import DIGITS, RESNET18, assert_same_results, batch_of, classify, with_backend

CPU = torch.device("cpu")
EXPORTED = ["onnxruntime", "openvino"]


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if not p.name.startswith("."))


def _digits_module(perturb: float = 0.0) -> NormalisedNetwork:
    network, _, pre = build_network(DIGITS)
    body, head = split_head(network.eval())
    if perturb:
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(perturb * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(7)))
    return NormalisedNetwork(body, head, pre)


@pytest.mark.slow
@pytest.mark.parametrize("backend", EXPORTED)
def test_a_second_load_reuses_the_cached_export_untouched(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = with_backend(DIGITS, backend)
    load_model(spec, CPU, backend_cache_dir=str(tmp_path))
    [entry] = _entries(tmp_path)
    before = (entry / MODEL_FILE).stat()
    with caplog.at_level(logging.INFO, logger="service.inference.backends.exported"):
        load_model(spec, CPU, backend_cache_dir=str(tmp_path))
    after = (entry / MODEL_FILE).stat()
    assert _entries(tmp_path) == [entry]
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert any(f"cached export {entry} passed the equivalence gate" in r.getMessage() for r in caplog.records)


def test_the_cache_key_changes_with_weights_input_shape_and_library_version() -> None:
    module, spec = _digits_module(), {"source": "bundled"}
    key, _ = export_key("onnxruntime", "1.0", module, (1, 8, 8), spec)
    assert export_key("onnxruntime", "1.0", _digits_module(), (1, 8, 8), spec)[0] == key
    assert export_key("onnxruntime", "1.0", _digits_module(perturb=1e-3), (1, 8, 8), spec)[0] != key
    assert export_key("onnxruntime", "1.1", module, (1, 8, 8), spec)[0] != key
    assert export_key("onnxruntime", "1.0", module, (1, 16, 16), spec)[0] != key
    assert export_key("openvino", "1.0", module, (1, 8, 8), spec)[0] != key
    assert export_key("onnxruntime", "1.0", module, (1, 8, 8), {"source": "file"})[0] != key


def test_different_seeds_of_a_random_network_get_different_cache_keys() -> None:
    keys = set()
    for seed in (0, 0, 1):
        network, _, pre = build_network(RESNET18.model_copy(update={"seed": seed}))
        body, head = split_head(network.eval())
        keys.add(export_key("onnxruntime", "1.0", NormalisedNetwork(body, head, pre), (3, 224, 224), {})[0])
    assert len(keys) == 2


@pytest.mark.slow
@pytest.mark.parametrize("backend", EXPORTED)
def test_a_cached_export_of_different_weights_is_detected_and_rebuilt_from_the_served_weights(
    backend: str, tmp_path: Path, digit_pngs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A stale or tampered entry: the file under the right key holds another network's export."""
    spec = with_backend(DIGITS, backend)
    load_model(spec, CPU, backend_cache_dir=str(tmp_path))
    [entry] = _entries(tmp_path)
    stale = _digits_module(perturb=0.05)
    export_onnx(stale, gate_images(build_network(DIGITS)[2])[:2], entry / MODEL_FILE)
    tampered = (entry / MODEL_FILE).read_bytes()

    with caplog.at_level(logging.WARNING, logger="service.inference.backends.exported"):
        model = load_model(spec, CPU, backend_cache_dir=str(tmp_path))

    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"backend {backend}: cached export {entry} failed verification (on 12 images: top-1 differs on" in warning
    assert warning.endswith("; rebuilding it")
    assert _entries(tmp_path) == [entry]
    assert (entry / MODEL_FILE).read_bytes() != tampered
    eager = load_model(DIGITS, CPU)
    images = batch_of(eager, digit_pngs[:16])
    assert_same_results(classify(model, images), classify(eager, images))


@pytest.mark.slow
def test_an_unreadable_cached_export_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = with_backend(DIGITS, "onnxruntime")
    load_model(spec, CPU, backend_cache_dir=str(tmp_path))
    [entry] = _entries(tmp_path)
    good = (entry / MODEL_FILE).read_bytes()
    (entry / MODEL_FILE).write_bytes(good[: len(good) // 2])  # a half-written or truncated file
    with caplog.at_level(logging.WARNING, logger="service.inference.backends.exported"):
        model = load_model(spec, CPU, backend_cache_dir=str(tmp_path))
    assert model.backend_name == "onnxruntime"
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "failed verification (cannot be opened:" in warning
    assert len((entry / MODEL_FILE).read_bytes()) > len(good) // 2


def test_an_unwritable_cache_directory_still_loads_without_caching(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="service.inference.backends.cache"):
        model = load_model(with_backend(DIGITS, "onnxruntime"), CPU, backend_cache_dir=str(blocker / "cache"))
    assert model.backend_name == "onnxruntime"
    assert any(
        "is not writable" in r.getMessage() and "exports are not cached" in r.getMessage() for r in caplog.records
    )
    assert sorted(os.listdir(tmp_path)) == ["not-a-directory"]


LOAD_ONE = """
import sys, torch
from service.inference.sources import load_model
from service.settings import ModelSpec
model = load_model(ModelSpec(name="digits", backend="onnxruntime"), torch.device("cpu"), backend_cache_dir=sys.argv[1])
print(model.backend_name)
"""


@pytest.mark.slow
def test_two_processes_exporting_the_same_model_at_once_leave_one_complete_entry(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD_ONE, str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    assert [out.decode().split() for out, _ in outputs] == [["onnxruntime"], ["onnxruntime"]]
    [entry] = _entries(tmp_path)
    assert sorted(os.listdir(entry)) == ["meta.json", MODEL_FILE]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    # The entry is complete: a third load verifies and uses it.
    assert (
        load_model(with_backend(DIGITS, "onnxruntime"), CPU, backend_cache_dir=str(tmp_path)).backend_name
        == "onnxruntime"
    )

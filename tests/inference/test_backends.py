"""Every backend serves what torch eager serves: predictions, confidences, embeddings, any batch size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from service.inference.model import LoadedModel, RunOptions
from service.inference.sources import build_network, load_model
from service.settings import ModelSpec
from tests.inference.conftest import (
    DIGITS,
    RESNET18,
    assert_same_results,
    batch_of,
    classify,
    needs_compiler,
    with_backend,
)

CPU = torch.device("cpu")


def _load(spec: ModelSpec, cache: Path) -> LoadedModel:
    # channels_last as the service sets it by default: the eager reference is the served eager model.
    return load_model(spec, CPU, channels_last=True, backend_cache_dir=str(cache), threads=2)


def _check_against_eager(spec: ModelSpec, backend: str, pngs: list[bytes], cache: Path) -> None:
    eager = _load(spec, cache)
    other = _load(with_backend(spec, backend), cache)
    assert (eager.backend_name, other.backend_name) == ("torch", backend)
    assert other.embedding_dim == eager.embedding_dim and other.supports_embedding
    assert other.labels == eager.labels
    images = batch_of(eager, pngs)
    # 1 and 16: the exported batch axis is dynamic; 5: neither the export example nor a gate batch.
    for n in (1, 5, 16):
        assert_same_results(classify(other, images[:n]), classify(eager, images[:n]))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backend_serves_the_digits_model_as_torch_eager_does(
    backend: str, digit_pngs: list[bytes], tmp_path: Path
) -> None:
    _check_against_eager(DIGITS, backend, digit_pngs[:16], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backend_serves_random_resnet18_as_torch_eager_does(
    backend: str, digit_pngs: list[bytes], tmp_path: Path
) -> None:
    _check_against_eager(RESNET18, backend, digit_pngs[:16], tmp_path)


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("spec", [DIGITS, RESNET18], ids=["digits", "resnet18"])
def test_torch_compile_serves_what_torch_eager_does(spec: ModelSpec, digit_pngs: list[bytes], tmp_path: Path) -> None:
    _check_against_eager(spec, "torch_compile", digit_pngs[:16], tmp_path)


def test_the_default_torch_backend_is_the_network_itself_on_normalised_images(digit_pngs: list[bytes]) -> None:
    """Backend torch (the default, and the rollback) computes bit for bit what the whole network does."""
    model = load_model(DIGITS, CPU)
    network, _, pre = build_network(DIGITS)
    images = batch_of(model, digit_pngs[:8])
    with torch.inference_mode():
        expected = torch.softmax(network.eval()(pre.normalise(images, torch.float32)), dim=1)
    results = model.run(images, [RunOptions(top_k=10)] * 8)
    assert model.backend_name == "torch" and DIGITS.backend == "torch"
    for result, row in zip(results, expected, strict=True):
        assert [p.confidence for p in result.predictions] == row.sort(descending=True).values.tolist()
        assert [p.class_id for p in result.predictions] == row.argsort(descending=True, stable=True).tolist()

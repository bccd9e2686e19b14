"""Model specs and images shared by the backend tests."""

from __future__ import annotations

import shutil

import pytest
import torch

from service.inference.images import decode_image
from service.inference.model import ItemResult, LoadedModel, RunOptions
from service.settings import ModelSpec

DIGITS = ModelSpec(name="digits", version="1", source="bundled")
# Random parameters (no weights can be downloaded here), seeded: the same network in every process.
RESNET18 = ModelSpec(
    name="r18", version="1", source="torchvision", arch="resnet18", weights="IMAGENET1K_V1", pretrained=False
)

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")


def with_backend(spec: ModelSpec, backend: str, **changes: object) -> ModelSpec:
    return spec.model_copy(update={"backend": backend, **changes})


def batch_of(model: LoadedModel, pngs: list[bytes]) -> torch.Tensor:
    """Real images through the service's own decode and preprocessing."""
    pre = model.preprocessing
    return torch.stack([pre.to_uint8_tensor(decode_image(png, max_pixels=25_000_000)) for png in pngs])


def classify(model: LoadedModel, batch: torch.Tensor) -> list[ItemResult]:
    n = len(batch)
    return model.run(batch, [RunOptions(top_k=5, embed=True)] * n)


def assert_same_results(got: list[ItemResult], expected: list[ItemResult], atol: float = 1e-5) -> None:
    """Same top-1 and top-5 classes; confidences and embedding components equal within ``atol``."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.predictions[0].class_id == e.predictions[0].class_id
        got_conf = {p.class_id: p.confidence for p in g.predictions}
        expected_conf = {p.class_id: p.confidence for p in e.predictions}
        assert got_conf.keys() == expected_conf.keys()
        assert max(abs(got_conf[c] - expected_conf[c]) for c in got_conf) <= atol
        assert g.embedding is not None and e.embedding is not None
        assert len(g.embedding) == len(e.embedding)
        assert max(abs(a - b) for a, b in zip(g.embedding, e.embedding, strict=True)) <= atol

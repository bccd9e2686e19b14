"""Random-parameter models are seeded: every process serves the same network, and nothing else is seeded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from service.inference.sources import build_network
from tests.conftest import ROOT
from tests.inference.conftest import RESNET18


def _state(seed: int | None = None) -> dict[str, torch.Tensor]:
    spec = RESNET18 if seed is None else RESNET18.model_copy(update={"seed": seed})
    network, _, _ = build_network(spec)
    return network.state_dict()


def test_two_loads_of_a_random_network_are_bit_identical() -> None:
    first, second = _state(), _state()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_different_seeds_give_different_parameters() -> None:
    first, other = _state(0), _state(1)
    conv = "conv1.weight"
    assert not torch.equal(first[conv], other[conv])
    assert not torch.equal(first["fc.weight"], other["fc.weight"])


def test_the_default_seed_is_zero() -> None:
    default, zero = _state(), _state(0)
    assert RESNET18.seed == 0
    assert all(torch.equal(default[name], zero[name]) for name in default)


def test_building_a_seeded_network_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(42)
    expected = torch.rand(4)
    torch.manual_seed(42)
    _state(3)
    assert torch.equal(torch.rand(4), expected)


DIGEST = """
import hashlib
from service.inference.sources import build_network
from service.settings import ModelSpec
spec = ModelSpec(name="r18", source="torchvision", arch="resnet18", weights="IMAGENET1K_V1", pretrained=False)
network, _, _ = build_network(spec)
digest = hashlib.sha256()
for name, tensor in sorted(network.state_dict().items()):
    digest.update(name.encode() + tensor.contiguous().numpy().tobytes())
print(digest.hexdigest())
"""


@pytest.mark.slow
def test_another_process_builds_the_same_random_network() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    digests = {
        subprocess.run(
            [sys.executable, "-c", DIGEST], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64

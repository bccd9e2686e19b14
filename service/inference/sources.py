"""Loaders for each model source: the bundled digits CNN, torchvision weights, local files.

Weights are read from disk only: torchvision checkpoints must already be in the torch hub cache
(``python -m service.cli fetch-weights`` or the image build puts them there), never downloaded
while serving.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn

from service.inference.backends import BackendError, eager_backend, load_backend
from service.inference.digits import DIGITS_LABELS, INPUT_SIZE, DigitsCNN, bundled_weights_path
from service.inference.model import LoadedModel, split_head
from service.inference.preprocess import Preprocessing
from service.settings import ModelSpec

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    pass


def torchvision_weights(arch: str, weights: str | None) -> torchvision.models.WeightsEnum | None:
    if weights is None:
        return None
    try:
        return torchvision.models.get_model_weights(arch)[weights]
    except (KeyError, ValueError) as exc:
        raise ModelLoadError(f"unknown torchvision weights {arch}/{weights}: {exc}") from None


def checkpoint_path(weights: torchvision.models.WeightsEnum, extra_dir: str | None = None) -> Path:
    """Where ``weights`` lives in the torch hub cache (or ``extra_dir``), without downloading."""
    filename = os.path.basename(weights.url)
    candidates: list[Path] = [Path(torch.hub.get_dir()) / "checkpoints" / filename]
    if extra_dir:
        candidates.insert(0, Path(extra_dir) / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"weights file {filename} is not in {', '.join(str(c.parent) for c in candidates)}; "
        f"fetch it first: python -m service.cli fetch-weights {weights.__class__.__name__}.{weights.name}"
    )


def fetch_weights(weights: torchvision.models.WeightsEnum, dest_dir: str | None = None) -> Path:
    """Download ``weights`` into the hub cache: an explicit build/CLI step, never used while serving."""
    if dest_dir:
        os.environ["TORCH_HOME"] = dest_dir
    weights.get_state_dict(progress=False, check_hash=True)
    return checkpoint_path(weights)


def _preprocessing_from_weights(weights: torchvision.models.WeightsEnum) -> Preprocessing:
    transforms = weights.transforms()
    crop = transforms.crop_size[0]
    resize = transforms.resize_size[0] if transforms.resize_size else None
    return Preprocessing(
        crop_size=crop,
        resize_size=resize,
        mean=tuple(transforms.mean),
        std=tuple(transforms.std),
        interpolation=transforms.interpolation.value,
    )


def _read_labels(path: str) -> list[str]:
    try:
        labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ModelLoadError(f"cannot read labels file {path}: {exc}") from None
    if not labels:
        raise ModelLoadError(f"labels file {path} is empty")
    return labels


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    # weights_only refuses pickled code: a weights file is data, never a program.
    state: dict[str, torch.Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def build_network(spec: ModelSpec, weights_dir: str | None = None) -> tuple[nn.Module, list[str], Preprocessing]:
    network: nn.Module
    if spec.source == "bundled":
        network = DigitsCNN(num_classes=len(DIGITS_LABELS))
        network.load_state_dict(_load_state_dict(bundled_weights_path()))
        pre = Preprocessing(
            crop_size=INPUT_SIZE, resize_size=None, mean=(0.5,), std=(0.5,), interpolation="box", grayscale=True
        )
        return network, list(DIGITS_LABELS), pre

    if spec.source == "torchvision":
        assert spec.arch is not None
        weights = torchvision_weights(spec.arch, spec.weights)
        if weights is not None:
            labels = list(weights.meta["categories"])
        elif spec.labels is None:
            raise ModelLoadError(f"model {spec.name}: no weights metadata, so 'labels' is required")
        else:
            labels = _read_labels(spec.labels)
        try:
            network = _seeded(
                spec.seed, lambda: torchvision.models.get_model(spec.arch, weights=None, num_classes=len(labels))
            )
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from None
        if weights is not None and spec.pretrained:
            network.load_state_dict(_load_state_dict(checkpoint_path(weights, weights_dir)))
        pre = _preprocessing_from_weights(weights) if weights is not None else _spec_preprocessing(spec)
        return network, labels, pre

    assert spec.path is not None and spec.labels is not None
    labels = _read_labels(spec.labels)
    path = _resolve(spec.path, weights_dir)
    if spec.format == "torchscript":
        try:
            network = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"cannot load TorchScript {path}: {exc}") from None
    else:
        assert spec.arch is not None
        network = torchvision.models.get_model(spec.arch, weights=None, num_classes=len(labels))
        network.load_state_dict(_load_state_dict(path))
    return network, labels, _spec_preprocessing(spec)


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with the CPU generator seeded: parameters that are not loaded afterwards are the
    same in every process. The global generator's state is restored, so nothing else sees the seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _spec_preprocessing(spec: ModelSpec) -> Preprocessing:
    return Preprocessing(
        crop_size=spec.input_size,
        resize_size=spec.resize_size or round(spec.input_size * 256 / 224),
        mean=spec.mean,
        std=spec.std,
    )


def _resolve(path: str, weights_dir: str | None) -> Path:
    candidate = Path(path)
    if not candidate.is_absolute() and weights_dir:
        candidate = Path(weights_dir) / candidate
    if not candidate.is_file():
        raise ModelLoadError(f"model file {candidate} does not exist")
    return candidate


def load_model(
    spec: ModelSpec,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    *,
    channels_last: bool = False,
    weights_dir: str | None = None,
    backend_cache_dir: str | None = None,
    threads: int | None = None,
    max_batch_size: int = 16,
    niceness: int = 0,
) -> LoadedModel:
    """Build the network of ``spec`` and the backend that runs it (``spec.backend``, gated).

    ``backend_cache_dir``: where ONNX exports are cached (None: not cached). ``threads``: intra-op
    threads of a non-torch backend (None: torch's, which the app set from the CPU budget).
    ``max_batch_size``: the largest batch torch_compile is warmed up for. ``niceness``: the
    inference threads' nice increment, which the thread pools of onnxruntime/openvino get too.
    """
    network, labels, pre = build_network(spec, weights_dir)
    network.eval()
    body: nn.Module
    head: nn.Module | None
    if isinstance(network, torch.jit.ScriptModule):
        body, head = network, None
    else:
        body, head = split_head(network)
    embedding_dim = head.in_features if isinstance(head, nn.Linear) else None
    try:
        backend = load_backend(
            spec.backend,
            body,
            head,
            pre,
            device=device,
            dtype=dtype,
            channels_last=channels_last,
            threads=threads if threads is not None else torch.get_num_threads(),
            cache_dir=backend_cache_dir,
            tolerance=spec.backend_tolerance,
            max_batch_size=max_batch_size,
            niceness=niceness,
            spec=spec.model_dump(include={"source", "arch", "weights", "pretrained", "seed", "format"}),
        )
    except BackendError as exc:
        if not spec.backend_fallback:
            raise ModelLoadError(f"model {spec.name}:{spec.version}: {exc}") from exc
        log.error("model %s:%s: %s; serving torch eager instead (backend_fallback)", spec.name, spec.version, exc)
        backend = eager_backend(body, head, pre, device=device, dtype=dtype, channels_last=channels_last)
    return LoadedModel(
        name=spec.name,
        version=spec.version,
        backend=backend,
        labels=labels,
        preprocessing=pre,
        device=device,
        embedding_dim=embedding_dim,
    )

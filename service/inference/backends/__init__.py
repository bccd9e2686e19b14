"""Forward-pass backends: torch eager (the default and the reference), ONNX Runtime, OpenVINO, torch.compile.

``load_backend`` turns a split network into a ``ForwardBackend``. Every backend but torch eager is
checked by the equivalence gate before it is returned: a backend that would serve different
numbers raises instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from service.inference.backends.base import (
    BackendError,
    BackendUnavailable,
    ForwardBackend,
    ForwardOutput,
    NormalisedNetwork,
    built_at_priority,
)
from service.inference.backends.cache import ExportCache
from service.inference.backends.eager import TorchEager
from service.inference.backends.gate import DEFAULT_TOLERANCE, EquivalenceError, EquivalenceGate
from service.inference.preprocess import Preprocessing

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "EquivalenceError",
    "ForwardBackend",
    "ForwardOutput",
    "eager_backend",
    "load_backend",
]

log = logging.getLogger(__name__)


def eager_backend(
    body: nn.Module,
    head: nn.Module | None,
    preprocessing: Preprocessing,
    *,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool,
) -> TorchEager:
    """The network on its device, in its dtype and memory format, run by torch eager."""
    body = body.to(device=device, dtype=dtype).eval()
    if channels_last:
        body = body.to(memory_format=torch.channels_last)
    if head is not None:
        head = head.to(device=device, dtype=dtype).eval()
    module = NormalisedNetwork(body, head, preprocessing, dtype=dtype, channels_last=channels_last)
    return TorchEager(module, device)


def load_backend(
    kind: str,
    body: nn.Module,
    head: nn.Module | None,
    preprocessing: Preprocessing,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    threads: int = 1,
    cache_dir: str | None = None,
    tolerance: float | None = None,
    max_batch_size: int = 16,
    niceness: int = 0,
    spec: Mapping[str, object] | None = None,
) -> ForwardBackend:
    """Build ``kind`` for the network ``body`` + ``head`` (float32, on the CPU, as loaded).

    ``niceness``: the inference threads' nice increment, given to the thread pools of ONNX Runtime
    and OpenVINO too. ``spec``: what describes the model beyond its weights (source, arch), for the
    export cache key.
    Raises ``BackendError`` (``BackendUnavailable``, ``EquivalenceError``) naming the backend.
    """
    if kind == "torch":
        return eager_backend(body, head, preprocessing, device=device, dtype=dtype, channels_last=channels_last)
    input_shape = (preprocessing.channels, preprocessing.crop_size, preprocessing.crop_size)
    started = time.monotonic()
    if kind == "torch_compile":
        from service.inference.backends.compiled import TorchCompiled

        eager = eager_backend(body, head, preprocessing, device=device, dtype=dtype, channels_last=channels_last)
        gate = EquivalenceGate(eager, preprocessing, tolerance or DEFAULT_TOLERANCE[dtype])
        backend: ForwardBackend = TorchCompiled(eager.module, device, input_shape, (1, 2, max_batch_size))
        report = gate.require(backend)
        log.info("backend torch_compile compiled and passed the equivalence gate %s", report.summary())
    elif kind in ("onnxruntime", "openvino"):
        backend = _load_exported(
            kind, body, head, preprocessing, input_shape, device, threads, niceness, cache_dir, tolerance, spec or {}
        )
    else:
        raise BackendError(f"unknown backend {kind!r}")
    log.info("backend %s ready in %.1fs", kind, time.monotonic() - started)
    return backend


def _load_exported(
    kind: str,
    body: nn.Module,
    head: nn.Module | None,
    preprocessing: Preprocessing,
    input_shape: tuple[int, int, int],
    device: torch.device,
    threads: int,
    niceness: int,
    cache_dir: str | None,
    tolerance: float | None,
    spec: Mapping[str, object],
) -> ForwardBackend:
    from service.inference.backends import ort, ov
    from service.inference.backends.exported import export_key, load_verified

    library = ort if kind == "onnxruntime" else ov
    version = library.library_version()  # first: a missing library fails before a long export
    # Exported graphs are fp32 on the CPU layout torch loaded: the reference is eager in exactly that form.
    module = NormalisedNetwork(body.eval(), head.eval() if head is not None else None, preprocessing)
    gate = EquivalenceGate(
        TorchEager(module, torch.device("cpu")), preprocessing, tolerance or DEFAULT_TOLERANCE[torch.float32]
    )
    key, parts = export_key(kind, version, module, input_shape, spec)

    def opener(path: Path, outputs: list[str]) -> ForwardBackend:
        if kind == "onnxruntime":
            return built_at_priority(
                niceness, lambda: ort.OnnxRuntimeBackend(path, outputs, threads=threads, device=device)
            )
        return built_at_priority(niceness, lambda: ov.OpenVinoBackend(path, outputs, threads=threads, device=device))

    return load_verified(kind, opener, module, gate, ExportCache(cache_dir), key, parts)

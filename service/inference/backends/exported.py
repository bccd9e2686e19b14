"""ONNX-based backends: export (or reuse a cached export), open it, and let only a verified one serve."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from service.inference.backends.base import ForwardBackend, NormalisedNetwork
from service.inference.backends.cache import ExportCache, cache_key, weights_digest
from service.inference.backends.gate import EquivalenceGate
from service.inference.backends.onnx_export import EXPORT_FORMAT, export_onnx, exporter_versions, output_names

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"

Opener = Callable[[Path, list[str]], ForwardBackend]


def export_key(
    backend: str,
    library_version: str,
    module: NormalisedNetwork,
    input_shape: tuple[int, int, int],
    spec: Mapping[str, object],
) -> tuple[str, dict[str, object]]:
    parts: dict[str, object] = {
        "format": EXPORT_FORMAT,
        "backend": backend,
        "backend_version": library_version,
        **exporter_versions(),
        "input": ["uint8", *input_shape],
        "spec": dict(spec),
        "network": repr(module),
        "weights": weights_digest(module.state_dict()),
    }
    return f"{backend}-{cache_key(parts)}", parts


def load_verified(
    backend: str,
    opener: Opener,
    module: NormalisedNetwork,
    gate: EquivalenceGate,
    cache: ExportCache,
    key: str,
    parts: Mapping[str, object],
) -> ForwardBackend:
    """A cached export that passes the gate, else a fresh export that passes it (then cached), else an error.

    A cached entry that fails (stale, corrupted, tampered with) is discarded and rebuilt from the
    torch model in hand: the weights being served are the truth, never the file.
    """
    outputs = output_names(module)
    entry = cache.lookup(key)
    if entry is not None:
        try:
            candidate = opener(entry / MODEL_FILE, outputs)
            report = gate.check(candidate)
            problem = None if report.passed else report.summary()
        except Exception as exc:  # whatever the runtime raises on an unreadable file: treat as a bad entry
            problem = f"cannot be opened: {type(exc).__name__}: {exc}"
        if problem is None:
            log.info("backend %s: cached export %s passed the equivalence gate %s", backend, entry, report.summary())
            return candidate
        log.warning("backend %s: cached export %s failed verification (%s); rebuilding it", backend, entry, problem)
        cache.discard(key)
    with cache.staging() as staging:
        path = staging / MODEL_FILE
        example = gate.images[:2].clone()
        export_onnx(module, example, path)
        candidate = opener(path, outputs)
        report = gate.require(candidate)
        (staging / "meta.json").write_text(json.dumps({k: v for k, v in parts.items() if k != "network"}, indent=1))
        cache.publish(staging, key)
    log.info("backend %s: fresh export passed the equivalence gate %s", backend, report.summary())
    return candidate

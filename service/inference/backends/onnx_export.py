"""Export of ``NormalisedNetwork`` to one self-contained ONNX file with a dynamic batch axis."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from service.inference.backends.base import BackendError, BackendUnavailable, NormalisedNetwork

# Raise when the export itself changes (opset, names, what the graph contains): old entries stop matching.
EXPORT_FORMAT = 1
INPUT_NAME = "images"


def exporter_versions() -> dict[str, str]:
    """Versions of the libraries that write the file (part of the cache key); raises when one is missing."""
    versions = {"torch": str(torch.__version__)}
    for name in ("onnx", "onnxscript"):
        try:
            versions[name] = str(importlib.import_module(name).__version__)
        except ImportError as exc:
            raise BackendUnavailable(
                f"the ONNX export needs the {name} package, which is not installed (pip install 'ml-api[fast]'): {exc}"
            ) from None
    return versions


def output_names(module: NormalisedNetwork) -> list[str]:
    return ["logits"] if module.head is None else ["features", "logits"]


def export_onnx(module: NormalisedNetwork, example: torch.Tensor, path: Path) -> None:
    """Write ``module`` to ``path``: uint8 NCHW ``images`` in, ``features`` and ``logits`` out.

    torch.export-based (the maintained exporter; the TorchScript one is deprecated), weights inside
    the file so one rename publishes it.
    """
    if isinstance(module.body, torch.jit.ScriptModule):
        raise BackendError("a TorchScript archive cannot be exported to ONNX by torch.export; use backend torch")
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with _quiet("onnxscript", "onnx_ir"):
            torch.onnx.export(
                module.eval(),
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=output_names(module),
                dynamic_shapes={INPUT_NAME: {0: batch}},
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # torch.export, onnxscript and onnx raise unrelated types; all mean "cannot export"
        raise BackendError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The optimiser logs every rewrite pass at INFO: keep the service's INFO log about the service."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

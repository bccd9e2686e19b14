"""ONNX Runtime: an InferenceSession over the exported graph."""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import torch

from service.inference.backends.base import BackendUnavailable, ForwardOutput, output_of
from service.inference.backends.onnx_export import INPUT_NAME

log = logging.getLogger(__name__)


def library() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend onnxruntime needs the onnxruntime package, which is not installed "
            f"(pip install 'ml-api[fast]'): {exc}"
        ) from None
    module: ModuleType = onnxruntime
    return module


def library_version() -> str:
    return str(library().__version__)


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, output_names: list[str], *, threads: int, device: torch.device) -> None:
        ort = library()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's own thread pool spins between ops by default; sleep instead, as OMP_WAIT_POLICY=PASSIVE
        # makes torch's do (service/inference/__init__.py says why).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu): running on CPU")
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.output_names = output_names
        self.providers: list[str] = list(self.session.get_providers())

    def forward(self, batch_uint8: torch.Tensor) -> ForwardOutput:
        arrays = self.session.run(self.output_names, {INPUT_NAME: batch_uint8.cpu().numpy()})
        return output_of(tuple(torch.from_numpy(a) for a in arrays))

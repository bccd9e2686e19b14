"""OpenVINO: the exported ONNX graph compiled for the CPU plugin."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from service.inference.backends.base import BackendUnavailable, ForwardOutput, output_of

log = logging.getLogger(__name__)

# One synchronous request at a time is how the batcher calls a model: LATENCY puts every thread
# into one stream for it, THROUGHPUT splits them into streams only concurrent requests would use
# (bench/backends.py measures both).
PERFORMANCE_HINT = "LATENCY"


def library() -> ModuleType:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend openvino needs the openvino package, which is not installed (pip install 'ml-api[fast]'): {exc}"
        ) from None
    module: ModuleType = openvino
    return module


def library_version() -> str:
    return str(library().__version__)


def compile_config(threads: int, hint: str = PERFORMANCE_HINT) -> dict[str, Any]:
    return {
        "PERFORMANCE_HINT": hint,
        "INFERENCE_NUM_THREADS": threads,
        # The CPU plugin defaults to bf16 where the CPU has AMX/AVX512-BF16 (this machine does): 2.8e-2
        # off on resnet18 logits. Serving fp32 numbers is the point of the gate, so ask for f32.
        "INFERENCE_PRECISION_HINT": "f32",
        # Pinning binds the threads to fixed cores: under a CPU quota shared by several workers (or
        # pods on one node) they would pile onto the same cores instead of letting the kernel spread them.
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoBackend:
    name = "openvino"

    def __init__(
        self, path: Path, output_names: list[str], *, threads: int, device: torch.device, hint: str = PERFORMANCE_HINT
    ) -> None:
        ov = library()
        if device.type == "cuda":
            log.warning("backend openvino runs on the CPU plugin even though the device is CUDA")
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_config(threads, hint))
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in output_names]
        # An InferRequest is not thread-safe; the batcher calls from one thread, this keeps any other caller safe.
        self._lock = threading.Lock()

    def forward(self, batch_uint8: torch.Tensor) -> ForwardOutput:
        # infer() copies the outputs out of the request's buffers (share_outputs=False), so the
        # arrays stay valid after the next batch.
        with self._lock:
            result = self.request.infer({0: batch_uint8.cpu().numpy()})
        return output_of(tuple(torch.from_numpy(result[out]) for out in self.outputs))

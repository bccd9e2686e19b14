"""torch.compile (inductor): the eager module compiled at load, for every batch-size class it will see."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from service.inference.backends.base import BackendError, ForwardOutput, NormalisedNetwork, output_of


class TorchCompiled:
    name = "torch_compile"

    def __init__(
        self,
        module: NormalisedNetwork,
        device: torch.device,
        input_shape: tuple[int, int, int],
        warm_batch_sizes: Iterable[int],
    ) -> None:
        self.device = device
        self.compiled: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = torch.compile(module, dynamic=True)
        # Compiling happens on the first call of each shape class: here, not in the inference thread of
        # a serving pod. Dynamo specialises batch 1 and (for convolutions on CPU) splits at 16, so
        # 1, 2 and the largest batch cover every class in 1..max.
        for n in sorted(set(warm_batch_sizes)):
            try:
                self.forward(torch.zeros((n, *input_shape), dtype=torch.uint8))
            except Exception as exc:  # a missing C++ compiler or triton surfaces as one of many exception types
                raise BackendError(f"backend torch_compile failed to compile: {type(exc).__name__}: {exc}") from exc

    def forward(self, batch_uint8: torch.Tensor) -> ForwardOutput:
        with torch.inference_mode():
            if self.device.type == "cuda":
                batch_uint8 = batch_uint8.pin_memory().to(self.device, non_blocking=True)
            return output_of(self.compiled(batch_uint8))

"""torch eager: the reference every other backend is gated against, and the default."""

from __future__ import annotations

import torch

from service.inference.backends.base import ForwardOutput, NormalisedNetwork, output_of


class TorchEager:
    name = "torch"

    def __init__(self, module: NormalisedNetwork, device: torch.device) -> None:
        self.module = module.eval()
        self.device = device

    def forward(self, batch_uint8: torch.Tensor) -> ForwardOutput:
        with torch.inference_mode():
            if self.device.type == "cuda":
                batch_uint8 = batch_uint8.pin_memory().to(self.device, non_blocking=True)
            return output_of(self.module(batch_uint8))

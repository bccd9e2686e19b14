"""What every backend computes and the interface ``LoadedModel.run`` calls."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Protocol, TypeVar

import torch
from torch import nn

from service.inference.device import lower_thread_priority
from service.inference.preprocess import Preprocessing

T = TypeVar("T")


class BackendError(RuntimeError):
    """A backend could not be built or is not trustworthy; the message names the backend."""


class BackendUnavailable(BackendError):
    """The library a backend needs is not installed (or cannot run here)."""


class ForwardOutput(NamedTuple):
    features: torch.Tensor | None  # (N, D) penultimate features; None when the network has no separable head
    logits: torch.Tensor  # (N, classes)


class ForwardBackend(Protocol):
    """One forward pass of a model version: uint8 NCHW batch (CPU) in, features and logits out.

    Called from one thread at a time (the batcher's inference thread, or the loader before that).
    Normalisation is part of the pass, so an exported graph takes the images as they are.
    """

    name: str

    def forward(self, batch_uint8: torch.Tensor) -> ForwardOutput: ...


class NormalisedNetwork(nn.Module):
    """uint8 images -> (features, logits): the one computation every backend runs, exported or eager.

    Outputs ``(features, logits)``, or ``(logits,)`` when ``head`` is None (a TorchScript archive).
    ``body`` and ``head`` must already have their device, dtype and memory format; mean and std stay
    float32 like ``Preprocessing.normalise``, so eager results are those of the split network alone.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        body: nn.Module,
        head: nn.Module | None,
        preprocessing: Preprocessing,
        *,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.dtype = dtype
        self.channels_last = channels_last
        device = next((p.device for p in body.parameters()), torch.device("cpu"))
        self.register_buffer(
            "mean", torch.tensor(preprocessing.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        )
        self.register_buffer(
            "std", torch.tensor(preprocessing.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # The same arithmetic as Preprocessing.normalise, in the same order.
        x = ((images.to(torch.float32) / 255.0 - self.mean) / self.std).to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.body(x)
        if self.head is None:
            return (features,)
        return features.flatten(1), self.head(features)


def output_of(outputs: tuple[torch.Tensor, ...]) -> ForwardOutput:
    return ForwardOutput(outputs[0], outputs[1]) if len(outputs) == 2 else ForwardOutput(None, outputs[0])


def built_at_priority(niceness: int, build: Callable[[], T]) -> T:
    """``build()`` in a short-lived thread niced like the inference threads (``lower_thread_priority``).

    ONNX Runtime and OpenVINO start their thread pools when a session is built, and a new thread
    takes its creator's nice value: built here, their pools yield to the event loop at saturation
    as torch's OpenMP team (started from the niced inference thread) does.
    """
    if niceness <= 0:
        return build()
    with ThreadPoolExecutor(1, "backend-build", initializer=lower_thread_priority, initargs=(niceness,)) as pool:
        return pool.submit(build).result()

"""The bundled model run directly, without the service: the reference HTTP results must match."""

from __future__ import annotations

import torch

from service.inference.images import decode_image
from service.inference.model import ItemResult, LoadedModel, RunOptions
from service.inference.sources import load_model
from service.settings import ModelSpec


def bundled_model() -> LoadedModel:
    return load_model(ModelSpec(name="digits", version="1", source="bundled"), torch.device("cpu"))


def classify_in_process(model: LoadedModel, images: list[bytes], top_k: int = 5) -> list[ItemResult]:
    tensors = [model.preprocessing.to_uint8_tensor(decode_image(data, max_pixels=25_000_000)) for data in images]
    return model.run(torch.stack(tensors), [RunOptions(top_k=top_k)] * len(tensors))

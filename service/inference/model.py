"""A loaded model version: its network split into body and head, labels and preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from service.inference.backends.base import ForwardBackend
from service.inference.preprocess import Preprocessing
from service.inference.results import ClassScore


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What one request wants back for each of its images."""

    top_k: int = 5
    embed: bool = False
    probabilities: bool = False


@dataclass
class ItemResult:
    """One image's model output: its top classes and, when asked for, its embedding and every class's
    probability (float32, one per label)."""

    predictions: list[ClassScore]
    embedding: list[float] | None = None
    probabilities: np.ndarray | None = None


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """Detach the last ``nn.Linear`` so one forward pass yields both embedding and logits.

    torchvision classifiers end in a Linear applied to the penultimate features (``fc``,
    ``classifier[-1]``, ``heads.head``); replacing it by Identity makes the body return them.
    """
    last_name = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last_name = name
    if last_name is None:
        return model, None
    parent_name, _, child = last_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    # Children of a Sequential are registered under "0", "1", ...: by name works for both kinds.
    head = parent.get_submodule(child)
    setattr(parent, child, nn.Identity())
    return model, head


@dataclass
class LoadedModel:
    name: str
    version: str
    backend: ForwardBackend  # runs the forward pass: torch eager, or a gated faster backend
    labels: list[str]
    preprocessing: Preprocessing
    device: torch.device
    embedding_dim: int | None = None  # None: no separable head, so no embeddings

    @property
    def supports_embedding(self) -> bool:
        return self.embedding_dim is not None

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def run(self, batch_uint8: torch.Tensor, options: Sequence[RunOptions]) -> list[ItemResult]:
        """Classify a uint8 NCHW batch, ``options[i]`` for image ``i``; called from an inference thread."""
        with torch.inference_mode():
            features, logits = self.backend.forward(batch_uint8)
            probs = torch.softmax(logits.float(), dim=1)
            k = min(max(o.top_k for o in options), probs.shape[1])
            conf_t, idx_t = probs.topk(k, dim=1)
            top_conf: list[list[float]] = conf_t.cpu().tolist()
            top_idx: list[list[int]] = idx_t.cpu().tolist()
            want = [i for i, o in enumerate(options) if o.embed]
            embeddings: dict[int, list[float]] = {}
            if want and features is not None:
                feats = torch.nn.functional.normalize(features[want].float().flatten(1), dim=1).cpu()
                embeddings = {i: feats[j].tolist() for j, i in enumerate(want)}
            every = probs.cpu().numpy() if any(o.probabilities for o in options) else None
        results = []
        for i, option in enumerate(options):
            preds = [
                ClassScore(class_id=c, label=self.labels[c] if c < len(self.labels) else str(c), confidence=p)
                for c, p in zip(top_idx[i][: option.top_k], top_conf[i][: option.top_k], strict=True)
            ]
            row = every[i] if every is not None and option.probabilities else None
            results.append(ItemResult(predictions=preds, embedding=embeddings.get(i), probabilities=row))
        return results

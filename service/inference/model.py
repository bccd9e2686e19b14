"""A loaded model version: its network split into body and head, labels and preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from service.inference.preprocess import Preprocessing
from service.inference.results import ClassScore


@dataclass
class ItemResult:
    """One image's model output: its top classes and, when asked for, its embedding."""

    predictions: list[ClassScore]
    embedding: list[float] | None = None


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
    head = getattr(parent, child) if not child.isdigit() else parent[int(child)]
    if child.isdigit():
        parent[int(child)] = nn.Identity()
    else:
        setattr(parent, child, nn.Identity())
    return model, head


@dataclass
class LoadedModel:
    name: str
    version: str
    body: nn.Module
    head: nn.Module | None
    labels: list[str]
    preprocessing: Preprocessing
    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = False

    @property
    def supports_embedding(self) -> bool:
        return self.head is not None

    @property
    def embedding_dim(self) -> int | None:
        return self.head.in_features if isinstance(self.head, nn.Linear) else None

    def run(self, batch_uint8: torch.Tensor, top_ks: list[int], embed: list[bool]) -> list[ItemResult]:
        """Classify a uint8 NCHW batch; called from the batcher's inference thread only."""
        with torch.inference_mode():
            if self.device.type == "cuda":
                batch_uint8 = batch_uint8.pin_memory().to(self.device, non_blocking=True)
            x = self.preprocessing.normalise(batch_uint8, self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features = self.body(x)
            logits = self.head(features) if self.head is not None else features
            probs = torch.softmax(logits.float(), dim=1)
            k = min(max(top_ks), probs.shape[1])
            top_conf, top_idx = probs.topk(k, dim=1)
            top_conf, top_idx = top_conf.cpu().tolist(), top_idx.cpu().tolist()
            want = [i for i, flag in enumerate(embed) if flag]
            embeddings: dict[int, list[float]] = {}
            if want and self.head is not None:
                feats = torch.nn.functional.normalize(features[want].float().flatten(1), dim=1).cpu()
                embeddings = {i: feats[j].tolist() for j, i in enumerate(want)}
        results = []
        for i, top_k in enumerate(top_ks):
            preds = [
                ClassScore(class_id=c, label=self.labels[c] if c < len(self.labels) else str(c), confidence=p)
                for c, p in zip(top_idx[i][:top_k], top_conf[i][:top_k], strict=True)
            ]
            results.append(ItemResult(predictions=preds, embedding=embeddings.get(i)))
        return results

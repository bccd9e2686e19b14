"""What inference produces, as plain data: no torch, no protocol shapes (front ends render these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the client imports these types and must not need numpy
    import numpy as np


@dataclass(frozen=True, slots=True)
class ClassScore:
    class_id: int
    label: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Classification:
    """One image's top classes (by confidence, descending) and which model version produced them."""

    predictions: tuple[ClassScore, ...]
    model_name: str
    model_version: str
    inference_time_ms: float
    # Every class's probability (float32, in label order), only when the caller asked for them.
    probabilities: np.ndarray | None = field(default=None, compare=False, repr=False)
    # The image's upright (width, height) as decoded from its file; None for preprocessed tensors.
    image_size: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Embedding:
    """Penultimate-layer features of one image, L2-normalised."""

    vector: tuple[float, ...]
    model_name: str
    model_version: str

"""What inference produces, as plain data: no torch, no HTTP shapes (front ends render these)."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class Embedding:
    """Penultimate-layer features of one image, L2-normalised."""

    vector: tuple[float, ...]
    model_name: str
    model_version: str

"""What a front end may publish about a loaded model version, as plain data (no torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """A loaded model version: its classes, what runs it, and the preprocessing its input gets.

    The preprocessing is the service's own (``service/inference/preprocess.py``): convert to
    ``channels`` (1: grayscale "L", 3: RGB), resize the shorter side to ``resize_size`` and
    centre-crop ``input_size`` x ``input_size`` (``resize_size`` None: resize straight to
    ``input_size`` x ``input_size``) with ``interpolation``; then per channel
    ``(pixel / 255 - mean) / std``.
    """

    name: str
    version: str
    versions: tuple[str, ...]
    labels: tuple[str, ...]
    backend: str
    input_size: int
    resize_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    channels: int

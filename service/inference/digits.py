"""The bundled offline model: a small CNN for 8x8 grayscale digits (scikit-learn's data set)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch
from torch import nn

DIGITS_LABELS = [str(d) for d in range(10)]
INPUT_SIZE = 8


class DigitsCNN(nn.Module):
    """``features`` ends in the embedding layer so ``fc`` alone maps embeddings to logits."""

    def __init__(self, num_classes: int = 10, embedding_dim: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(64 * 2 * 2, embedding_dim),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(self.features(x))
        return logits


def bundled_weights_path() -> Path:
    return Path(str(files("service.assets.demo").joinpath("digits_cnn.pt")))

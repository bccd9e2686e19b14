"""Per-image preprocessing to a uint8 tensor; normalisation happens per batch on the device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

_PIL_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class Preprocessing:
    """torchvision's ``ImageClassification`` steps: resize the short side, centre-crop, normalise.

    ``resize_size=None`` resizes straight to ``crop_size`` x ``crop_size`` (small models).
    """

    crop_size: int
    resize_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    grayscale: bool = False

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def draft_size(self) -> tuple[int, int]:
        side = self.resize_size or self.crop_size
        return (side, side)

    def to_uint8_tensor(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> uint8 CHW tensor of the model's input size."""
        resample = _PIL_INTERPOLATION[self.interpolation]
        if self.grayscale:
            image = image.convert("L")
        if self.resize_size is None:
            image = image.resize((self.crop_size, self.crop_size), resample)
        else:
            width, height = image.size
            short = min(width, height)
            scale = self.resize_size / short
            # int() truncation matches torchvision.transforms.functional.resize.
            size = (max(1, int(width * scale)), max(1, int(height * scale)))
            size = (self.resize_size, size[1]) if width == short else (size[0], self.resize_size)
            image = image.resize(size, resample, reducing_gap=None)
            width, height = image.size
            left = (width - self.crop_size) // 2
            top = (height - self.crop_size) // 2
            image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def normalise(self, batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """uint8 NCHW batch (already on its device) -> normalised floating batch."""
        mean = torch.tensor(self.mean, device=batch.device, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=batch.device, dtype=torch.float32).view(1, -1, 1, 1)
        return ((batch.to(torch.float32) / 255.0 - mean) / std).to(dtype)

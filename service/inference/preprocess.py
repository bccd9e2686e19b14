"""Per-image preprocessing to a uint8 tensor; normalisation happens per batch on the device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from service.errors import ImageTooLarge
from service.inference.budget import DEFAULT_MAX_PIXELS
from service.inference.images import pillow_errors

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

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the image is resized to before the centre crop (torchvision's rule)."""
        if self.resize_size is None:
            return (self.crop_size, self.crop_size)
        short = min(width, height)
        scale = self.resize_size / short
        # int() truncation matches torchvision.transforms.functional.resize.
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        return (self.resize_size, size[1]) if width == short else (size[0], self.resize_size)

    def check_budget(self, width: int, height: int, max_pixels: int) -> None:
        """Refuse, before any resampling, an image whose resize would allocate over ``max_pixels``.

        Pillow resamples horizontally first, into a (target width) x (source height) buffer, then
        vertically into the target: both are judged here, in Python integers. Short side 1 of a
        1 x 65535 image scaled to 256 makes the long side 16.7M (a 17 GB buffer), and a
        1 x 25M one overflows Pillow's int32 sizes.
        """
        target_w, target_h = self.resized_size(width, height)
        peak = target_w * max(height, target_h)
        if peak > max_pixels:
            raise ImageTooLarge(
                f"resizing the {width}x{height} image for this model would need {peak} pixels; "
                f"the limit is {max_pixels}"
            )

    def to_uint8_tensor(self, image: Image.Image, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
        """RGB PIL image -> uint8 CHW tensor of the model's input size.

        ``max_pixels`` bounds every buffer preprocessing allocates (the service passes
        ``ML_API_MAX_IMAGE_PIXELS``, the budget the decoded source was held to).
        """
        resample = _PIL_INTERPOLATION[self.interpolation]
        self.check_budget(*image.size, max_pixels)
        with pillow_errors("preprocessing the image"):
            if self.grayscale:
                image = image.convert("L")
            size = self.resized_size(*image.size)
            if self.resize_size is None:
                image = image.resize(size, resample)
            else:
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

"""scikit-learn's digits as images: the data the bundled model is trained and tested on."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

SEED = 20261124
TEST_FRACTION = 0.25


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels); images are uint8 8x8, ink bright."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=TEST_FRACTION, random_state=SEED, stratify=digits.target
    )
    return x_train, y_train, x_test, y_test


def digit_png(image8: np.ndarray, scale: int = 4) -> bytes:
    """An 8x8 digit as a PNG, upscaled by ``scale`` with nearest neighbour (box-downscaling undoes it)."""
    image = Image.fromarray(image8, mode="L").resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()

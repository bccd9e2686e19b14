"""Preprocessing within a pixel budget: the resize target is judged before anything is resampled."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from service.errors import ImageTooLarge, InvalidImage
from service.inference.images import decode_image
from service.inference.preprocess import Preprocessing
from service.settings import Settings
from tests.conftest import make_settings
from tests.inference.memory import measure

BUDGET = 25_000_000
TORCHVISION = Preprocessing(crop_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
DIGITS = Preprocessing(crop_size=28, resize_size=None, mean=(0.5,), std=(0.5,), interpolation="box", grayscale=True)

_SETUP = """
import io
from PIL import Image
from service.inference.images import decode_image
from service.inference.preprocess import Preprocessing
out = io.BytesIO()
Image.new("L", (1, {height})).save(out, "PNG", optimize=True)
data = out.getvalue()
pre = Preprocessing(crop_size=224, resize_size=256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
"""


def _png(width: int, height: int, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, "PNG", optimize=True)
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("height", [65_535, 25_000_000])
def test_a_one_pixel_wide_strip_is_refused_with_bounded_memory(height: int) -> None:
    # Before: 1 x 65535 made a 256 x 16.7M resize (17 GB); 1 x 25M overflowed Pillow (500).
    run = "pre.to_uint8_tensor(decode_image(data, max_pixels=25_000_000, draft_size=pre.draft_size))"
    result = measure(_SETUP.format(height=height), run, limit_mib=2048)
    assert (result.outcome, "aspect ratio" in result.message) == ("InvalidImage", True), result
    assert result.growth_mib < 64


@pytest.mark.slow
def test_with_the_aspect_limit_lifted_the_resize_target_is_refused_before_resampling() -> None:
    run = """
    image = decode_image(data, max_pixels=25_000_000, max_aspect_ratio=1e9)
    pre.to_uint8_tensor(image)
    """
    result = measure(_SETUP.format(height=65_535), run, limit_mib=2048)
    assert result.outcome == "ImageTooLarge", result
    assert f"{256 * 65_535 * 256} pixels" in result.message
    assert result.growth_mib < 64


def test_the_strip_is_342_bytes_or_less_and_refused_before_decoding() -> None:
    data = _png(1, 65_535)
    assert len(data) <= 342
    with pytest.raises(InvalidImage, match=r"1x65535 pixels, an aspect ratio of 65535:1; the limit is 32:1"):
        decode_image(data, max_pixels=BUDGET)


@pytest.mark.parametrize(
    ("pre", "width", "height", "peak"),
    [
        # Horizontal pass first: (target width) x max(source height, target height).
        (TORCHVISION, 1, 65_535, 256 * 65_535 * 256),
        (TORCHVISION, 65_535, 1, 16_776_960 * 256),
        (TORCHVISION, 4000, 3000, 341 * 3000),
        (TORCHVISION, 100, 3200, 256 * 8192),
        (DIGITS, 1, 1_000_000, 28 * 1_000_000),
        (DIGITS, 5000, 5000, 28 * 5000),
    ],
)
def test_the_budget_is_the_largest_buffer_pillow_would_allocate(
    pre: Preprocessing, width: int, height: int, peak: int
) -> None:
    pre.check_budget(width, height, peak)  # exactly at the budget: accepted
    with pytest.raises(ImageTooLarge, match=f"would need {peak} pixels; the limit is {peak - 1}"):
        pre.check_budget(width, height, peak - 1)


def test_a_tall_strip_is_refused_for_the_digits_model_too() -> None:
    image = decode_image(_png(1, 1_000_000), max_pixels=BUDGET, max_aspect_ratio=1e9)
    with pytest.raises(ImageTooLarge, match="would need 28000000 pixels"):
        DIGITS.to_uint8_tensor(image, max_pixels=BUDGET)


@pytest.mark.parametrize(("width", "height"), [(3200, 100), (100, 3200), (4000, 3000), (224, 224), (7, 9)])
def test_images_within_the_limits_give_the_model_shape(width: int, height: int) -> None:
    image = decode_image(_png(width, height, "RGB"), max_pixels=BUDGET)
    for pre in (TORCHVISION, DIGITS):
        tensor = pre.to_uint8_tensor(image, max_pixels=BUDGET)
        assert tensor.dtype == torch.uint8
        assert tuple(tensor.shape) == (pre.channels, pre.crop_size, pre.crop_size)


def test_the_aspect_ratio_limit_is_inclusive() -> None:
    assert decode_image(_png(320, 10), max_pixels=BUDGET, max_aspect_ratio=32).size == (320, 10)
    with pytest.raises(InvalidImage, match=r"aspect ratio of 32:1; the limit is 31\.9:1"):
        decode_image(_png(320, 10), max_pixels=BUDGET, max_aspect_ratio=31.9)


def test_the_new_limits_are_settings_with_safe_defaults() -> None:
    settings = make_settings()
    assert (settings.max_image_aspect_ratio, settings.max_jpeg_scans) == (32.0, 64)
    for name in ("max_image_pixels", "max_image_aspect_ratio", "max_jpeg_scans"):
        assert Settings.model_fields[name].description
    # Pillow's own guard refuses above twice its MAX_IMAGE_PIXELS: a larger budget would be a lie.
    assert Image.MAX_IMAGE_PIXELS is not None
    make_settings(max_image_pixels=2 * Image.MAX_IMAGE_PIXELS)
    with pytest.raises(ValueError, match="max_image_pixels"):
        make_settings(max_image_pixels=2 * Image.MAX_IMAGE_PIXELS + 1)

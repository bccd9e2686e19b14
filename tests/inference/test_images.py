"""Image decoding: every contract format and mode, EXIF orientation, bombs and garbage refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.errors import ImageTooLarge, InvalidImage
from service.inference.images import decode_image

LIMIT = 25_000_000


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_contract_format_decodes_to_rgb(fmt: str) -> None:
    decoded = decode_image(encode(Image.new("RGB", (20, 10), (200, 10, 10)), fmt), max_pixels=LIMIT)
    assert decoded.mode == "RGB" and decoded.size == (20, 10)
    r, g, b = decoded.getpixel((5, 5))
    assert r > 150 and g < 60 and b < 60


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    array = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(array), "PNG"), max_pixels=LIMIT)
    values = np.asarray(decoded)[:, :, 0]
    assert values.tolist() == [[0, 63], [127, 255]]


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA"])
def test_other_modes_are_converted_to_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    assert decode_image(encode(Image.new(mode, (8, 8)), fmt), max_pixels=LIMIT).mode == "RGB"


def test_gif_uses_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, _, b = decode_image(data, max_pixels=LIMIT).getpixel((1, 1))
    assert r > 200 and b < 50


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(encode(image, "JPEG", exif=exif), max_pixels=LIMIT)
    assert decoded.size == (20, 40)


def test_images_over_the_pixel_limit_are_refused_before_decoding() -> None:
    data = encode(Image.new("L", (2000, 2000)), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=1_000_000)


def test_a_decompression_bomb_is_refused() -> None:
    data = encode(Image.new("1", (12000, 12000)), "PNG")  # 144 M pixels in a few KB
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=LIMIT)


@pytest.mark.parametrize("data", [b"", b"GIF89a", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_garbage_and_truncated_bytes_are_invalid_images(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(data, max_pixels=LIMIT)


def test_formats_outside_the_allow_list_are_refused() -> None:
    data = encode(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(InvalidImage):
        decode_image(data, max_pixels=LIMIT)

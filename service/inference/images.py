"""Safe image decoding: a format allow-list, header budgets, first frame only, EXIF orientation.

Every failure of the decoders on hostile bytes is a client error (``InvalidImage``, or
``ImageTooLarge`` for sizes over the budget); ``MemoryError`` is not: with the budgets below no
accepted file should need more memory than they allow, so running out is a server fault (or a
budget bug) and is left to surface as one.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import cast

from PIL import ExifTags, Image, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage, ServiceError
from service.inference.budget import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_JPEG_SCANS,
    check_dimensions,
    check_jpeg_scans,
    webp_canvas_size,
)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Pillow warns about malformed metadata with text taken from the file: noise an attacker controls.
# Its DecompressionBombWarning is redundant with the explicit budget checked below (a process-wide
# filter, because warnings.catch_warnings is not thread-safe and decoding runs in a thread pool).
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_MESSAGE_CHARS = 200


@contextlib.contextmanager
def pillow_errors(what: str) -> Iterator[None]:
    """Turn any failure of Pillow on hostile input into ``InvalidImage`` (or ``ImageTooLarge``).

    Pillow's parsers raise whatever their code hits on a malformed file (struct.error, TypeError,
    IndexError, ZeroDivisionError, KeyError, RecursionError, SystemError from C...): no list of
    types is complete, so everything but MemoryError and our own errors is the input's fault.
    """
    try:
        yield
    except ServiceError:
        raise
    except MemoryError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image is too large to decode: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"the bytes are not a decodable image (supported: {', '.join(SUPPORTED_FORMATS)})") from None
    except Exception as exc:
        detail = str(exc)[:_MESSAGE_CHARS] or type(exc).__name__
        raise InvalidImage(f"{what} failed: {detail}") from None


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    draft_size: tuple[int, int] | None = None,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS,
) -> Image.Image:
    """Decode the first frame of ``data`` into an RGB image, within the budgets.

    ``draft_size`` lets JPEG decode at a reduced scale (DCT scaling) when the model needs far fewer
    pixels than the file has; the result is never smaller than ``draft_size``.
    """
    return decode_image_sized(
        data,
        max_pixels=max_pixels,
        draft_size=draft_size,
        max_aspect_ratio=max_aspect_ratio,
        max_jpeg_scans=max_jpeg_scans,
    )[0]


def decode_image_sized(
    data: bytes,
    *,
    max_pixels: int,
    draft_size: tuple[int, int] | None = None,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
    max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS,
) -> tuple[Image.Image, tuple[int, int]]:
    """``decode_image``, and the picture's (width, height) as the file stores it, upright (EXIF
    orientation applied): a JPEG drafted at a reduced scale decodes smaller than that."""
    if not data:
        raise InvalidImage("the image is empty")
    canvas = webp_canvas_size(data)
    if canvas is not None:
        check_dimensions(*canvas, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio)
    check_jpeg_scans(data, max_scans=max_jpeg_scans)
    with pillow_errors("decoding the image"):
        image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        # Before load(): the declared size is what load() allocates (width * height * bands).
        check_dimensions(*image.size, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio)
        declared: tuple[int, int] = image.size
        if draft_size is not None and image.format in ("JPEG", "MPO"):
            image.draft("RGB", draft_size)
        # Only the current (first) frame is loaded; nothing here asks for n_frames or seeks, so a
        # file of 10,000 frames costs what its first frame costs.
        image.load()
        check_dimensions(*image.size, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio)
        # Orientations 5-8 turn the picture a quarter: its upright width is the stored height.
        upright = declared if (exif_orientation(image) or 1) < 5 else (declared[1], declared[0])
        return _to_rgb(_apply_orientation(image)), upright


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation (1-8), or None when absent or unreadable: malformed EXIF is no EXIF."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except MemoryError:
        raise
    except Exception:
        return None
    return orientation if isinstance(orientation, int) and orientation in range(1, 9) else None


def _apply_orientation(image: Image.Image) -> Image.Image:
    # Not ImageOps.exif_transpose: it also rewrites the EXIF/XMP of the result (exif.tobytes()),
    # which fails on the same malformed metadata, for data we discard anyway.
    method = _TRANSPOSE.get(exif_orientation(image) or 1)
    return image.transpose(method) if method is not None else image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Scale 16/32-bit grayscale to 8 bits over its actual range rather than clipping at 255.
        gray = image.convert("I")
        # One band: (min, max) numbers, not per-band pairs.
        lo, hi = cast(tuple[float, float], gray.getextrema())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        gray = gray.point(lambda v: (v - lo) * scale).convert("L")
        return gray.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image

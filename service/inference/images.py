"""Safe image decoding: a format allow-list, a pixel budget and EXIF orientation."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def decode_image(data: bytes, *, max_pixels: int, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode ``data`` into an RGB image, refusing bombs, unknown formats and truncated files.

    ``draft_size`` lets JPEG decode at a reduced scale (DCT scaling) when the model needs far fewer
    pixels than the file has; the result is never smaller than ``draft_size``.
    """
    if not data:
        raise InvalidImage("the image is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between MAX_IMAGE_PIXELS and twice that.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"the image has {width * height} pixels; the limit is {max_pixels}")
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", draft_size)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image is too large to decode: {exc}") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"the bytes are not a decodable image (supported: {', '.join(SUPPORTED_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Scale 16/32-bit grayscale to 8 bits over its actual range rather than clipping at 255.
        gray = image.convert("I")
        lo, hi = gray.getextrema()
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

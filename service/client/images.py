"""Everything ``predict`` takes as an image, turned into what goes on the wire."""

from __future__ import annotations

import base64
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from PIL import Image as PILImage

    ImageSource: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | PILImage.Image
else:
    ImageSource: TypeAlias = Any

URL_SCHEMES = ("http://", "https://")

# Leading bytes of the formats the server reads; the upload's Content-Type is only a hint to it.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
# Modes PNG stores as they are; others (CMYK, YCbCr, ...) go through RGB.
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})


def sniff_media_type(data: bytes) -> str | None:
    """The image type by its leading bytes, or None when it is none the server reads."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    return None


@dataclass(frozen=True)
class ImagePayload:
    """One image: bytes the client sends, or a URL the server fetches."""

    name: str
    data: bytes | None = None
    url: str | None = None

    @property
    def media_type(self) -> str | None:
        return sniff_media_type(self.data) if self.data is not None else None

    def as_input(self) -> dict[str, str]:
        """The contract's ImageInput for JSON bodies (batch, stream, async)."""
        if self.url is not None:
            return {"image_url": self.url}
        assert self.data is not None
        return {"image_base64": base64.b64encode(self.data).decode("ascii")}


def is_url(source: object) -> bool:
    return isinstance(source, str) and source.lower().startswith(URL_SCHEMES)


def _pil_image_type() -> type | None:
    # Only when the caller has imported Pillow itself: the client never imports it.
    module = sys.modules.get("PIL.Image")
    image_type = getattr(module, "Image", None)
    return image_type if isinstance(image_type, type) else None


def _encode_pil(image: Any) -> bytes:
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def load_image(source: ImageSource) -> ImagePayload:
    """A path (str or PathLike), an http(s) URL (str), bytes, or a PIL image."""
    if is_url(source):
        assert isinstance(source, str)
        return ImagePayload(name=source, url=source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return ImagePayload(name=str(path), data=path.read_bytes())
    if isinstance(source, bytes | bytearray | memoryview):
        return ImagePayload(name="<bytes>", data=bytes(source))
    pil_type = _pil_image_type()
    if pil_type is not None and isinstance(source, pil_type):
        return ImagePayload(name="<PIL image>", data=_encode_pil(source))
    raise TypeError(f"an image is a path, an http(s) URL, bytes or a PIL image, not {type(source).__name__}")

"""Resource budgets checked on an image's header, before a decoder allocates or spends time on it.

Every limit here is judged from numbers the file declares (its size, its scan count), so a hostile
file is refused before the allocation or the CPU time it asks for, not after.
"""

from __future__ import annotations

import struct

from service.errors import ImageTooLarge, InvalidImage

# Defaults of the matching settings (service/settings.py), also used by callers that pass none.
DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MAX_ASPECT_RATIO = 32.0
DEFAULT_MAX_JPEG_SCANS = 64

_SOS = b"\xff\xda"


def check_dimensions(width: int, height: int, *, max_pixels: int, max_aspect_ratio: float) -> None:
    """Refuse an image whose declared size is over the pixel budget or of a degenerate shape."""
    if width <= 0 or height <= 0:
        raise InvalidImage(f"the image declares an empty size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image has {width * height} pixels ({width}x{height}); the limit is {max_pixels}")
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        # 400, not 413: a smaller copy of the same shape would be refused too.
        raise InvalidImage(
            f"the image is {width}x{height} pixels, an aspect ratio of {ratio:.0f}:1; "
            f"the limit is {max_aspect_ratio:g}:1"
        )


def check_jpeg_scans(data: bytes, *, max_scans: int) -> None:
    """Refuse a JPEG with more scans than ``max_scans``.

    libjpeg makes one pass over the whole coefficient buffer per progressive scan, so a small file
    of repeated scans costs seconds of CPU per thousand scans. Counting SOS markers over the whole
    file is an upper bound on the scans the decoder runs (an EXIF thumbnail's scans count too),
    done in C at memory speed.
    """
    if data[:2] != b"\xff\xd8":
        return
    scans = data.count(_SOS)
    if scans > max_scans:
        raise InvalidImage(f"the JPEG has {scans} scans; the limit is {max_scans}")


def webp_canvas_size(data: bytes) -> tuple[int, int] | None:
    """The canvas size a WebP file declares, read from its first chunk header (None: not WebP).

    libwebp's animation decoder, which Pillow uses for every WebP, allocates two canvases when it
    is created, inside ``Image.open``: the size must be judged before that.
    """
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None

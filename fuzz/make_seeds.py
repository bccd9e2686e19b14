"""Write the fuzz seed corpus: small valid files of every supported format and its variants.

Run from the repository root: ``python -m fuzz.make_seeds`` (the output is committed, so this only
runs again when the seeds should change). Deterministic: the same Pillow writes the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

CORPUS = Path(__file__).resolve().parent / "corpus"


def _picture(mode: str, size: tuple[int, int] = (12, 9)) -> Image.Image:
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return rgb if mode == "RGB" else rgb.convert(mode)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "ml-api"
    return exif


def _seeds() -> Iterator[tuple[str, Image.Image, str, dict[str, object]]]:
    rgb = _picture("RGB")
    frames = [_picture("RGB").rotate(angle) for angle in (0, 90, 180)]
    yield "baseline.jpg", rgb, "JPEG", {"quality": 70}
    yield "progressive.jpg", rgb, "JPEG", {"progressive": True, "quality": 70}
    yield "orientation6.jpg", rgb, "JPEG", {"exif": _exif(6)}
    yield "cmyk.jpg", _picture("CMYK"), "JPEG", {}
    yield "gray.jpg", _picture("L"), "JPEG", {}
    yield "rgb.png", rgb, "PNG", {}
    yield "rgba.png", _picture("RGBA"), "PNG", {}
    yield "palette.png", _picture("P"), "PNG", {"transparency": 0}
    yield "gray16.png", Image.fromarray(np.arange(108, dtype=np.uint16).reshape(9, 12) * 600), "PNG", {}
    yield "bilevel.png", _picture("1"), "PNG", {}
    yield "exif.png", rgb, "PNG", {"exif": _exif(3)}
    yield "lossy.webp", rgb, "WEBP", {"quality": 50}
    yield "lossless.webp", _picture("RGBA"), "WEBP", {"lossless": True}
    yield "exif.webp", rgb, "WEBP", {"exif": _exif(8)}
    yield "animated.webp", frames[0], "WEBP", {"save_all": True, "append_images": frames[1:], "duration": 10}
    yield "still.gif", _picture("P"), "GIF", {}
    yield "animated.gif", frames[0], "GIF", {"save_all": True, "append_images": frames[1:], "duration": 10}
    yield "rgb.bmp", rgb, "BMP", {}
    yield "palette.bmp", _picture("P"), "BMP", {}
    yield "raw.tiff", rgb, "TIFF", {}
    yield "lzw.tiff", rgb, "TIFF", {"compression": "tiff_lzw"}
    yield "deflate.tiff", _picture("L"), "TIFF", {"compression": "tiff_adobe_deflate"}
    yield "packbits.tiff", _picture("RGBA"), "TIFF", {"compression": "packbits"}
    yield "jpeg.tiff", rgb, "TIFF", {"compression": "jpeg"}
    yield "orientation5.tiff", rgb, "TIFF", {"exif": _exif(5)}
    yield "multipage.tiff", frames[0], "TIFF", {"save_all": True, "append_images": frames[1:]}


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, image, fmt, options in _seeds():
        out = io.BytesIO()
        image.save(out, format=fmt, **options)
        (CORPUS / name).write_bytes(out.getvalue())
    print(f"{len(list(CORPUS.iterdir()))} seeds in {CORPUS}")


if __name__ == "__main__":
    main()

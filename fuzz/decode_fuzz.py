"""Coverage-guided fuzzing of decode + preprocess (atheris), for every supported format.

The only acceptable outcomes for any bytes are a uint8 tensor of the model's input shape, or
``InvalidImage`` / ``ImageTooLarge``; anything else (another exception, a crash, more memory than
``-rss_limit_mb``, an input slower than ``-timeout``) is a finding. Pillow's plugins are Python,
so instrumenting them gives the fuzzer real coverage of the parsers; the C decoders underneath
are exercised, though not instrumented.

    python -m fuzz.decode_fuzz WORK_CORPUS fuzz/corpus -max_total_time=600 -rss_limit_mb=2048

(``make fuzz`` does this.) A finding becomes a file under tests/data/hostile/ with its expected
outcome in tests/data/hostile/expected.json; tests/inference/test_decode_hostile.py replays them.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["PIL", "service.inference"]):
    from PIL import (
        BmpImagePlugin,
        GifImagePlugin,
        Image,
        ImageFile,
        JpegImagePlugin,
        MpoImagePlugin,
        PngImagePlugin,
        TiffImagePlugin,
        WebPImagePlugin,
    )

    from service.errors import ImageTooLarge, InvalidImage
    from service.inference.images import decode_image
    from service.inference.preprocess import Preprocessing

import torch

_PLUGINS = (BmpImagePlugin, GifImagePlugin, ImageFile, JpegImagePlugin, MpoImagePlugin, PngImagePlugin)
_PLUGINS += (TiffImagePlugin, WebPImagePlugin, Image)
# The service's defaults, and the two shapes of preprocessing it has: the bundled digits model
# (grayscale, straight to 28 x 28) and a torchvision classifier (resize 256, crop 224).
MAX_PIXELS = 25_000_000
MODELS = (
    Preprocessing(crop_size=28, resize_size=None, mean=(0.5,), std=(0.5,), interpolation="box", grayscale=True),
    Preprocessing(crop_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
)


def check(data: bytes) -> None:
    """One input through decode and both preprocessings; raises on any unacceptable outcome."""
    try:
        image = decode_image(data, max_pixels=MAX_PIXELS, draft_size=MODELS[1].draft_size)
    except (InvalidImage, ImageTooLarge):
        return
    for pre in MODELS:
        try:
            tensor = pre.to_uint8_tensor(image, max_pixels=MAX_PIXELS)
        except (InvalidImage, ImageTooLarge):
            continue
        shape = (pre.channels, pre.crop_size, pre.crop_size)
        if tensor.dtype != torch.uint8 or tuple(tensor.shape) != shape:
            raise AssertionError(f"got {tensor.dtype} {tuple(tensor.shape)}, expected uint8 {shape}")


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""Hostile image bytes: every outcome is a tensor, InvalidImage or ImageTooLarge, within budget."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import pytest
import torch
from PIL import GifImagePlugin, Image, TiffImagePlugin, WebPImagePlugin

from service.errors import ImageTooLarge, InvalidImage
from service.inference.images import SUPPORTED_FORMATS, decode_image, exif_orientation
from service.inference.preprocess import Preprocessing
from tests.conftest import ROOT
from tests.inference.memory import measure

HOSTILE = ROOT / "tests" / "data" / "hostile"
EXPECTED: dict[str, dict[str, str]] = json.loads((HOSTILE / "expected.json").read_text())
BUDGET = 25_000_000
PRE = Preprocessing(crop_size=224, resize_size=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
OUTCOMES: dict[str, type[Exception]] = {"InvalidImage": InvalidImage, "ImageTooLarge": ImageTooLarge}


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def test_every_committed_sample_has_an_expected_outcome() -> None:
    samples = {p.name for p in HOSTILE.iterdir() if p.name != "expected.json"}
    assert samples == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_sample_gives_its_expected_outcome(name: str) -> None:
    data = (HOSTILE / name).read_bytes()
    expected = EXPECTED[name]

    def run() -> torch.Tensor:
        return PRE.to_uint8_tensor(decode_image(data, max_pixels=BUDGET, draft_size=PRE.draft_size), max_pixels=BUDGET)

    if expected["outcome"] == "ok":
        tensor = run()
        assert (tensor.dtype, tuple(tensor.shape)) == (torch.uint8, (3, 224, 224))
    else:
        with pytest.raises(OUTCOMES[expected["outcome"]], match=expected["match"]):
            run()


_STATUS = {"ok": (200, None), "InvalidImage": (400, "INVALID_IMAGE"), "ImageTooLarge": (413, "PAYLOAD_TOO_LARGE")}


@pytest.mark.anyio
async def test_every_hostile_sample_gets_its_contract_status_from_predict(client: httpx.AsyncClient) -> None:
    for name, expected in sorted(EXPECTED.items()):
        data = (HOSTILE / name).read_bytes()
        response = await client.post("/api/v1/predict/upload", content=data, headers={"content-type": "image/png"})
        status, code = _STATUS[expected["outcome"]]
        assert response.status_code == status, (name, response.text)
        if code is not None:
            assert response.json()["error"] == code, name


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00",  # truncated IFD
        b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # IFD offset past the end
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01\x12\x00\x05" * 8,  # 65535 entries, rational type
        b"Exif\x00\x00garbage",
    ],
)
def test_malformed_exif_counts_as_no_orientation(exif: bytes) -> None:
    data = _encode(Image.new("RGB", (40, 20), (200, 10, 10)), "JPEG", exif=exif)
    decoded = decode_image(data, max_pixels=BUDGET)
    assert decoded.size == (40, 20)
    assert exif_orientation(Image.open(io.BytesIO(data))) is None


def test_a_valid_orientation_still_applies_beside_malformed_tags() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "cam"
    data = _encode(Image.new("RGB", (40, 20)), "WEBP", exif=exif.tobytes())
    assert decode_image(data, max_pixels=BUDGET).size == (20, 40)


@contextlib.contextmanager
def counting_calls(function: Callable[..., object]) -> Iterator[list[int]]:
    """Count the calls of a Pillow function while decoding (its own frames, not a stand-in)."""
    code = function.__code__
    calls = [0]

    def profiler(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code is code:
            calls[0] += 1

    sys.setprofile(profiler)
    try:
        yield calls
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize(
    ("fmt", "step"),
    [
        ("GIF", GifImagePlugin.GifImageFile._seek),
        ("TIFF", TiffImagePlugin.TiffImageFile._seek),
        ("WEBP", WebPImagePlugin.WebPImageFile._get_next),
    ],
)
def test_a_many_frame_file_is_decoded_from_its_first_frame_only(fmt: str, step: Callable[..., object]) -> None:
    frames = [Image.new("RGB", (16, 16), (255 * (i == 0), 0, 255 * (i > 0))) for i in range(2000)]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    with counting_calls(step) as calls:
        decoded = decode_image(data, max_pixels=BUDGET)
    assert calls[0] == 1  # frame 0, never a walk over the 2000 (n_frames, is_animated, seek)
    r, _, b = decoded.getpixel((8, 8))  # type: ignore[misc]
    assert r > 200 and b < 50


def test_a_jpeg_with_more_scans_than_allowed_is_refused_before_decoding() -> None:
    image = Image.new("L", (2000, 2000))
    data = _encode(image, "JPEG", progressive=True)
    last = data[data.rfind(b"\xff\xda") : -2]
    bomb = data[:-2] + last * 100 + b"\xff\xd9"
    with pytest.raises(InvalidImage, match=r"the JPEG has 1\d\d scans; the limit is 64"):
        decode_image(bomb, max_pixels=BUDGET)
    # An ordinary progressive file is well inside the limit.
    assert decode_image(data, max_pixels=BUDGET).size == (2000, 2000)


@pytest.mark.slow
def test_a_webp_canvas_over_the_budget_is_refused_before_libwebp_allocates_it() -> None:
    # 9000 x 9000 is under Pillow's own limit, and libwebp callocs two 324 MB canvases for it when
    # its decoder is created; with 256 MiB of address space to spare that fails, unless refused first.
    setup = f"""
    from pathlib import Path
    from service.inference.images import decode_image
    data = Path({str(HOSTILE / "canvas-9000x9000.webp")!r}).read_bytes()
    """
    result = measure(setup, "decode_image(data, max_pixels=25_000_000)", limit_mib=256)
    assert result.outcome == "ImageTooLarge", result
    assert "81000000 pixels (9000x9000)" in result.message


@pytest.mark.slow
def test_running_out_of_memory_is_not_reported_as_a_bad_image() -> None:
    setup = """
    import io
    from PIL import Image
    from service.inference.images import decode_image
    out = io.BytesIO()
    Image.new("RGB", (5000, 4000)).save(out, "PNG")
    data = out.getvalue()
    """
    result = measure(setup, "decode_image(data, max_pixels=25_000_000)", limit_mib=32)
    assert result.outcome == "MemoryError", result


@pytest.mark.parametrize("fmt", SUPPORTED_FORMATS)
def test_every_truncation_of_every_format_is_a_tensor_or_a_client_error(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 3
    options: dict[str, Any] = {"exif": exif} if fmt in ("JPEG", "WEBP", "TIFF", "PNG") else {}
    data = _encode(Image.effect_mandelbrot((48, 40), (-2, -1.5, 1, 1.5), 40).convert("RGB"), fmt, **options)
    for end in range(0, len(data), max(1, len(data) // 200)):
        try:
            tensor = PRE.to_uint8_tensor(decode_image(data[:end], max_pixels=BUDGET), max_pixels=BUDGET)
        except (InvalidImage, ImageTooLarge):
            continue
        assert tuple(tensor.shape) == (3, 224, 224)


@pytest.mark.slow
def test_byte_flips_of_every_seed_give_only_contract_outcomes() -> None:
    # Complements the coverage-guided fuzzer, whose small inputs rarely decode far enough to reach
    # EXIF or pixel data: flips in otherwise whole files do (this found the committed exif samples).
    rng = random.Random(1)
    seeds = sorted((ROOT / "fuzz" / "corpus").iterdir())
    assert len(seeds) >= 20
    for seed in seeds:
        original = seed.read_bytes()
        for _ in range(1500):
            data = bytearray(original)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                tensor = PRE.to_uint8_tensor(decode_image(bytes(data), max_pixels=BUDGET), max_pixels=BUDGET)
            except (InvalidImage, ImageTooLarge):
                continue
            assert tuple(tensor.shape) == (3, 224, 224), seed.name


@pytest.mark.slow
def test_the_fuzzer_runs_clean_for_a_bounded_time(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    seconds = int(os.environ.get("FUZZ_SECONDS_CI", "60"))
    work, artifacts = tmp_path / "corpus", tmp_path / "artifacts"
    work.mkdir()
    artifacts.mkdir()
    # Through a shell that forks it: Linux carries a process's peak RSS across exec (from the mm it
    # replaces, which for a child of pytest is pytest's), and libFuzzer's -rss_limit_mb reads that
    # peak, so started straight from a large pytest process the fuzzer is "out of memory" at once.
    command = [
        "/bin/sh",
        "-c",
        '"$@"; exit $?',
        "sh",
        sys.executable,
        "-m",
        "fuzz.decode_fuzz",
        str(work),
        str(ROOT / "fuzz" / "corpus"),
        f"-max_total_time={seconds}",
        "-rss_limit_mb=2048",
        "-timeout=20",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 180, check=False)
    found = sorted(p.name for p in artifacts.iterdir())
    assert (done.returncode, found) == (0, []), done.stderr[-4000:]
    assert "Done " in done.stderr

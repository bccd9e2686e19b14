"""The protocol's tensor encodings and the FP32 input's way back to the pixels the model runs on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.dataplane.description import ModelDescription
from service.errors import InvalidTensor
from service.inference.preprocess import Preprocessing
from service.oip import tensors
from service.oip.model import IMAGE_FP32, IMAGE_UINT8, to_uint8_nchw

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DIGITS = ((0.5,), (0.5,))


def _model(mean: tuple[float, ...], std: tuple[float, ...], side: int = 4) -> ModelDescription:
    return ModelDescription(
        name="m",
        version="1",
        versions=("1",),
        labels=("a", "b"),
        backend="torch",
        input_size=side,
        resize_size=None,
        mean=mean,
        std=std,
        interpolation="bilinear",
        channels=len(mean),
    )


@pytest.mark.parametrize(("mean", "std"), [IMAGENET, DIGITS], ids=["imagenet", "digits"])
def test_fp32_made_by_the_published_normalisation_comes_back_as_the_same_pixels(
    mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    """Every level of every channel, normalised the way the server does it (torch, float32) and the way a
    client would in numpy (float32 or float64, then float32): zero quantisation error."""
    channels = len(mean)
    levels = np.arange(256, dtype=np.uint8)
    pixels = np.broadcast_to(levels.reshape(1, 1, 16, 16), (1, channels, 16, 16)).copy()
    server = Preprocessing(16, None, mean, std).normalise(torch.from_numpy(pixels), torch.float32).numpy()
    m, s = np.asarray(mean).reshape(1, -1, 1, 1), np.asarray(std).reshape(1, -1, 1, 1)
    numpy32 = ((pixels.astype(np.float32) / np.float32(255) - m.astype(np.float32)) / s.astype(np.float32)).astype(
        np.float32
    )
    numpy64 = ((pixels / 255.0 - m) / s).astype(np.float32)
    model = _model(mean, std, side=16)
    for normalised in (server, numpy32, numpy64):
        assert np.array_equal(to_uint8_nchw(model, IMAGE_FP32, normalised), pixels)


def test_any_other_fp32_is_quantised_to_the_nearest_level_within_half_a_level() -> None:
    rng = np.random.default_rng(0)
    pixels01 = rng.random((8, 3, 4, 4))  # anywhere in [0, 1], not on the 1/255 grid
    mean, std = IMAGENET
    m, s = np.asarray(mean).reshape(1, -1, 1, 1), np.asarray(std).reshape(1, -1, 1, 1)
    normalised = ((pixels01 - m) / s).astype(np.float32)
    back = to_uint8_nchw(_model(mean, std), IMAGE_FP32, normalised)
    assert np.abs(back / 255.0 - pixels01).max() <= 0.5 / 255 + 1e-6


def test_fp32_out_of_range_is_clipped_and_non_finite_refused() -> None:
    mean, std = DIGITS
    model = _model(mean, std, side=1)
    assert to_uint8_nchw(model, IMAGE_FP32, np.array([[[[5.0]]], [[[-5.0]]]], np.float32)).ravel().tolist() == [255, 0]
    with pytest.raises(InvalidTensor, match="values must be finite"):
        to_uint8_nchw(model, IMAGE_FP32, np.array([[[[np.inf]]]], np.float32))


def test_uint8_nhwc_becomes_nchw_in_a_writable_copy() -> None:
    nhwc = np.frombuffer(bytes(range(2 * 2 * 3)), dtype=np.uint8).reshape(1, 2, 2, 3)
    nchw = to_uint8_nchw(_model(*IMAGENET, side=2), IMAGE_UINT8, nhwc)
    assert nchw.shape == (1, 3, 2, 2) and nchw.flags.writeable and nchw.flags.c_contiguous
    assert nchw[0, :, 1, 0].tolist() == nhwc[0, 1, 0].tolist()


def test_raw_round_trips_for_every_fixed_size_datatype() -> None:
    for datatype, dtype in tensors.NUMPY_TYPES.items():
        array = np.arange(6).astype(dtype).reshape(2, 3)
        raw = tensors.to_raw(array)
        assert np.array_equal(tensors.from_raw("t", datatype, (2, 3), raw), array), datatype
    assert tensors.to_raw(np.array([1], dtype=">i4")) == b"\x01\x00\x00\x00"  # always little-endian


def test_bytes_elements_round_trip_and_malformed_ones_are_refused() -> None:
    elements = (b"", b"a", b"\x00" * 300)
    raw = tensors.serialize_bytes(elements)
    assert tensors.deserialize_bytes("t", raw, 3) == elements
    for broken, message in (
        (raw[:-1], "runs past the data"),
        (raw + b"\x01", "ends inside an element's length"),
        (raw + b"\x00\x00\x00\x00", "more BYTES elements than its shape holds"),
        (tensors.serialize_bytes(elements[:2]), "2 BYTES elements, but its shape holds 3"),
    ):
        with pytest.raises(InvalidTensor, match=message):
            tensors.deserialize_bytes("t", broken, 3)


def test_shapes_and_sizes_are_bounded_before_anything_is_allocated() -> None:
    with pytest.raises(InvalidTensor, match="too many elements"):
        tensors.check_shape("t", [1 << 20, 1 << 20])
    with pytest.raises(InvalidTensor, match="takes 16"):
        tensors.from_raw("t", "FP32", (2, 2), b"\x00" * 15)

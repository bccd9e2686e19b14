"""Tensor data of the Open Inference Protocol: datatypes, shapes, and the raw (binary) encodings.

Raw data is what gRPC ``raw_input_contents`` / ``raw_output_contents`` and the REST binary tensor
data extension carry: the elements in row-major order, little-endian; a ``BYTES`` element is its
length (4 bytes, little-endian) followed by its bytes. Every failure is an ``InvalidTensor`` whose
message names the tensor, so a client can fix the request from it.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from service.errors import InvalidTensor

BYTES = "BYTES"
# The protocol's fixed-size datatypes and their little-endian numpy types.
NUMPY_TYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = frozenset((*NUMPY_TYPES, BYTES))
# Bounds a hostile shape before anything is allocated for it (a body is capped in bytes anyway).
MAX_RANK = 8
MAX_ELEMENTS = 1 << 31
_LENGTH = struct.Struct("<I")

# A tensor's elements: a numpy array of its shape, or (BYTES) its elements as bytes, row-major.
TensorData = np.ndarray[Any, np.dtype[Any]] | tuple[bytes, ...]


def check_datatype(name: str, datatype: str) -> str:
    if datatype not in DATATYPES:
        raise InvalidTensor(f"tensor {name!r}: unknown datatype {datatype!r} (one of {', '.join(sorted(DATATYPES))})")
    return datatype


def check_shape(name: str, shape: Iterable[int]) -> tuple[int, ...]:
    dims = tuple(shape)
    if len(dims) > MAX_RANK:
        raise InvalidTensor(f"tensor {name!r}: {len(dims)} dimensions, at most {MAX_RANK}")
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in dims):
        raise InvalidTensor(f"tensor {name!r}: shape {list(dims)} must be non-negative integers")
    if math.prod(dims) > MAX_ELEMENTS:
        raise InvalidTensor(f"tensor {name!r}: shape {list(dims)} has too many elements")
    return dims


def from_raw(name: str, datatype: str, shape: tuple[int, ...], raw: bytes) -> TensorData:
    """Decode ``raw`` (the binary encoding above) as a tensor of ``datatype`` and ``shape``."""
    count = math.prod(shape)
    if datatype == BYTES:
        return deserialize_bytes(name, raw, count)
    dtype = NUMPY_TYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidTensor(
            f"tensor {name!r}: {len(raw)} bytes of data, but {datatype} of shape {list(shape)} "
            f"takes {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def from_elements(name: str, datatype: str, shape: tuple[int, ...], data: Sequence[Any]) -> TensorData:
    """Typed elements (JSON ``data``, possibly nested, or gRPC ``contents``) as a tensor of ``shape``."""
    count = math.prod(shape)
    if datatype == BYTES:
        flat = list(_flatten(name, data))
        if len(flat) != count:
            raise InvalidTensor(f"tensor {name!r}: {len(flat)} elements, but shape {list(shape)} holds {count}")
        if not all(isinstance(e, bytes) for e in flat):
            raise InvalidTensor(f"tensor {name!r}: BYTES elements must be byte strings")
        return tuple(flat)
    try:
        array = np.asarray(data, dtype=NUMPY_TYPES[datatype])
    except (ValueError, TypeError, OverflowError):
        raise InvalidTensor(f"tensor {name!r}: data is not a regular array of {datatype} values") from None
    if array.size != count:
        raise InvalidTensor(f"tensor {name!r}: {array.size} elements, but shape {list(shape)} holds {count}")
    return array.reshape(shape)


def _flatten(name: str, data: Sequence[Any], depth: int = 0) -> Iterable[Any]:
    for element in data:
        if isinstance(element, list | tuple):
            if depth >= MAX_RANK:
                raise InvalidTensor(f"tensor {name!r}: data nested deeper than {MAX_RANK} levels")
            yield from _flatten(name, element, depth + 1)
        else:
            yield element


def base64_elements(name: str, data: Sequence[Any]) -> list[bytes]:
    """JSON ``BYTES`` data (JSON has no bytes): each element a base64 string of the element's bytes."""
    out = []
    for element in _flatten(name, data):
        if not isinstance(element, str):
            raise InvalidTensor(f"tensor {name!r}: BYTES data in JSON must be base64 strings")
        try:
            out.append(base64.b64decode(element, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidTensor(f"tensor {name!r}: an element is not valid base64") from None
    return out


def serialize_bytes(elements: Iterable[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def deserialize_bytes(name: str, raw: bytes, count: int) -> tuple[bytes, ...]:
    elements = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidTensor(f"tensor {name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidTensor(f"tensor {name!r}: a BYTES element of {length} bytes runs past the data")
        elements.append(bytes(view[offset : offset + length]))
        offset += length
        if len(elements) > count:
            raise InvalidTensor(f"tensor {name!r}: more BYTES elements than its shape holds ({count})")
    if len(elements) != count:
        raise InvalidTensor(f"tensor {name!r}: {len(elements)} BYTES elements, but its shape holds {count}")
    return tuple(elements)


def to_raw(data: TensorData) -> bytes:
    """The binary encoding of a tensor (the inverse of ``from_raw``)."""
    if isinstance(data, tuple):
        return serialize_bytes(data)
    return np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()

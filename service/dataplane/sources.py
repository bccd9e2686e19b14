"""What a front end hands the data plane: where an image comes from and which model should serve it."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from service.errors import InvalidImage, ServiceError

_DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ImageUrl:
    """An image the server fetches (SSRF-checked, see ``service/fetch.py``)."""

    url: str


@dataclass(frozen=True, slots=True)
class Base64Image:
    """Image file bytes as base64 text (a ``data:image/...;base64,`` prefix allowed), decoded by the data
    plane: off the event loop when large, since a 10 MB string takes milliseconds to decode."""

    text: str

    def decode(self) -> bytes:
        text = _DATA_URL.sub("", self.text.strip(), count=1)
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidImage("image_base64 is not valid base64") from None
        if not data:
            raise InvalidImage("image_base64 is empty")
        return data


# Encoded image file bytes, as bytes or base64 text, or a URL to fetch them from.
ImageSource = bytes | Base64Image | ImageUrl
# One image of a multi-image request: its source, or why the front end could not even read it.
ImageItem = ImageSource | ServiceError


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model as a request names it: unset name = the default model, unset version = newest or A/B split."""

    name: str | None = None
    version: str | None = None
    # Set by DataPlane.resolve on the ref it returns: what the request named before resolution, so a
    # request whose version a reload removed meanwhile is resolved again instead of failing.
    requested: ModelRef | None = field(default=None, compare=False, repr=False)

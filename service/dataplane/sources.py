"""What a front end hands the data plane: where an image comes from and which model should serve it."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.errors import ServiceError


@dataclass(frozen=True, slots=True)
class ImageUrl:
    """An image the server fetches (SSRF-checked, see ``service/fetch.py``)."""

    url: str


# Encoded image file bytes, or a URL to fetch them from.
ImageSource = bytes | ImageUrl
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

"""X-Request-ID rules of the contract: 1..128 of [A-Za-z0-9._-], else a fresh UUID4."""

from __future__ import annotations

import re
import uuid

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def is_valid_request_id(value: str) -> bool:
    return bool(_VALID.fullmatch(value))


def new_request_id() -> str:
    return str(uuid.uuid4())

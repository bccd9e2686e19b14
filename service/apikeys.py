"""API keys, checked the same way by every front end: constant time, every key compared."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def presented_key(api_key: str | None, authorization: str | None) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
    if api_key is None and authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return api_key


def matching_key(presented: str | None, keys: Sequence[bytes]) -> bytes | None:
    """The configured key equal to ``presented``, or None."""
    if not presented:
        return None
    candidate = presented.encode()
    # compare_digest against every key (no early exit) so timing reveals neither key nor index.
    matches = [hmac.compare_digest(candidate, key) for key in keys]
    return next((key for key, ok in zip(keys, matches, strict=True) if ok), None)


def tenant_of(key: bytes) -> str:
    """A stable, non-secret name for the holder of an API key: what scopes their idempotency keys."""
    return hashlib.sha256(key).hexdigest()[:16]

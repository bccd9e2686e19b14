"""Which front end a data-plane call serves, for the prediction log's ``protocol`` field.

A context variable rather than a parameter: it reaches every path below the front end (per-image
tasks of a stream included, since tasks copy the context) without every data-plane method taking
it. The REST v1 front end (and the page, which calls it) is the default; other front ends set
theirs once per request with ``use_front_end``, and the job worker sets ``job``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Literal

FrontEnd = Literal["v1", "v2-rest", "v2-grpc", "job"]

_current: ContextVar[FrontEnd] = ContextVar("ml_api_front_end", default="v1")


def use_front_end(name: FrontEnd) -> None:
    """Mark the current request (its context) as served by ``name``."""
    _current.set(name)


def current_front_end() -> FrontEnd:
    return _current.get()

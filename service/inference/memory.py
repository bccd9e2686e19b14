"""Giving an unloaded model's memory back: to Python, to the C allocator, to the OS, to the GPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
import weakref
from functools import cache

import torch

log = logging.getLogger(__name__)


def release_memory(alive: list[weakref.ref[object]], *, device: torch.device, frozen: bool) -> bool:
    """Free what the dropped model held; returns whether every object in ``alive`` is gone.

    Reference counting frees a model as soon as the last reference goes, unless it sits in a
    reference cycle: then only the cyclic collector can, and start-up's ``gc.freeze()`` has moved
    everything loaded then out of its reach. So a full collection runs only when something is still
    alive, with the frozen generation thawed for it and frozen again afterwards (one full pass over
    the heap, on the event loop: rare, logged with its duration).
    """
    started = time.monotonic()
    collected = False
    if any(ref() is not None for ref in alive):
        collected = True
        if frozen:
            gc.unfreeze()
        gc.collect()
        if frozen:
            gc.freeze()
    released = all(ref() is None for ref in alive)
    # Freed tensors go back to glibc's heap; large blocks are returned to the OS, the rest on trim.
    _malloc_trim()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log.info(
        "released model memory in %.3fs (full collection: %s, everything freed: %s)",
        time.monotonic() - started,
        collected,
        released,
    )
    return released


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018  (glibc only: musl has none)
    except (OSError, AttributeError):
        return None
    return libc


def _malloc_trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)

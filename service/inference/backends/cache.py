"""On-disk cache of exported graphs, one directory per key, published by an atomic rename.

A key is a digest of everything the export depends on, so a change of weights, architecture,
input shape or library version never finds a stale entry. What is found is still only trusted
after the equivalence gate: a corrupted or tampered file gets the same scrutiny as a fresh export.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Viewed as bytes: numpy has no bfloat16, and the digest is of the bits anyway.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(parts: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class ExportCache:
    """``root/<key>/`` holds one export. ``root=None``: nothing is kept beyond one load."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root else None
        if self.root is not None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = self.root / f".probe-{uuid.uuid4().hex}"
                probe.touch()
                probe.unlink()
            except OSError as exc:
                log.warning("backend cache %s is not writable (%s): exports are not cached", self.root, exc)
                self.root = None

    def lookup(self, key: str) -> Path | None:
        if self.root is None:
            return None
        entry = self.root / key
        return entry if entry.is_dir() else None

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private directory beside the entries (same file system, so publishing is a rename)."""
        path = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def publish(self, staging: Path, key: str) -> None:
        """Move a verified export into place; when another process got there first, keep theirs."""
        if self.root is None:
            return
        try:
            os.rename(staging, self.root / key)
        except OSError:  # the entry exists (ENOTEMPTY/EEXIST): a concurrent load published the same key
            log.debug("backend cache entry %s already published by another process", key)

    def discard(self, key: str) -> None:
        """Remove an entry that failed verification; renamed away first so no reader sees it half-deleted."""
        if self.root is None:
            return
        trash = self.root / f".discarded-{key}-{uuid.uuid4().hex}"
        try:
            os.rename(self.root / key, trash)
        except OSError:
            return  # already gone (another process discarded it)
        shutil.rmtree(trash, ignore_errors=True)

"""The Redis key scheme of the job backend (``<prefix>`` defaults to ``ml-api``).

- ``<prefix>:jobs:stream``: the work queue. One entry per job attempt holds the image bytes and
  request fields; consumer group ``workers``; each process is one consumer (``hostname:pid``).
- ``<prefix>:job:<id>``: hash with the job's record JSON (``record``), ``status``, ``attempts``,
  ``worker``, ``final`` (set once, by the first terminal write) and ``idem``.
- ``<prefix>:job:<id>:events``: a small per-job stream of record JSON, one entry per state change;
  ``watch`` (SSE) reads it with XREAD BLOCK, so any replica can stream any job and no change is missed.
- ``<prefix>:idem:<tenant>:<key>``: ``Idempotency-Key`` -> job id (SET NX semantics inside the submit
  script); the tenant names the API key that submitted it, so two tenants' keys never meet.
- ``<prefix>:jobs:bytes``: the image bytes of every entry in the stream, the queue's byte bound.

Keys expire ``job_ttl_s`` after the job's last state change.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

GROUP = "workers"


def consumer_name() -> str:
    """One consumer per process: pending entries name the process that holds them."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class JobKeys:
    prefix: str = "ml-api"

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs:stream"

    @property
    def queued_bytes(self) -> str:
        return f"{self.prefix}:jobs:bytes"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def idempotency(self, key: str) -> str:
        return f"{self.prefix}:idem:{key}"

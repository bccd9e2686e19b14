"""SIGTERM handling shared by ``python -m service``, gunicorn workers and the app."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from types import FrameType

from service.dataplane.status import DrainState

log = logging.getLogger(__name__)


def exit_zero(signum: int, frame: FrameType | None) -> None:
    """After a graceful shutdown uvicorn restores the previous SIGTERM handler and re-raises the signal;
    with the default handler the process would die by signal (exit -15), not exit 0 as Kubernetes expects."""
    raise SystemExit(0)


def drain_on_sigterm(drain: DrainState) -> Callable[[], None]:
    """Chain a SIGTERM handler that flips readiness to 503 at once, before the server's own handler;
    returns the function that restores the previous handler.

    The server's handler then stops accepting and waits for in-flight requests (its graceful timeout);
    requests that reach the app meanwhile get 503 SHUTTING_DOWN, requests already in flight finish.
    """
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except ValueError:  # not the main thread (e.g. a test client): nothing to chain
        return lambda: None

    def handler(signum: int, frame: FrameType | None) -> None:
        if not drain.draining:
            log.info("SIGTERM: draining (readiness now 503, new requests refused, in-flight ones finish)")
        drain.draining = True
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise SystemExit(0)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return lambda: None

    def restore() -> None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, previous)

    return restore

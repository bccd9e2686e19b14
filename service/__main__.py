"""``python -m service``: uvicorn, one worker, settings and logging from the environment."""

from __future__ import annotations

import signal
from types import FrameType

import uvicorn

from service.observability.logging import logging_config
from service.settings import load_settings


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    settings = load_settings()
    # After a graceful shutdown uvicorn restores the previous SIGTERM handler and re-raises the signal;
    # with the default handler the process would die by signal (exit -15), not exit 0 as Kubernetes expects.
    signal.signal(signal.SIGTERM, _exit_zero)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level, settings.log_format),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
        proxy_headers=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()

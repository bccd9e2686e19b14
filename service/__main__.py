"""``python -m service``: uvicorn, one worker, settings and logging from the environment."""

from __future__ import annotations

import signal

import uvicorn

from service.observability.logging import logging_config
from service.settings import load_settings
from service.signals import exit_zero


def main() -> None:
    settings = load_settings()
    signal.signal(signal.SIGTERM, exit_zero)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.log_level, settings.log_format),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
        proxy_headers=False,
        server_header=False,
        limit_concurrency=settings.max_connections,
    )


if __name__ == "__main__":
    main()

"""The gunicorn worker class: uvicorn's, with the same server options ``python -m service`` uses."""

from __future__ import annotations

from typing import Any

from uvicorn.workers import UvicornWorker

from service.settings import load_settings


class ServiceWorker(UvicornWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # X-Forwarded-For is honoured by the app's own trusted-proxy rule (ML_API_TRUSTED_PROXIES) only;
        # uvicorn rewriting the client address first would let any local peer choose its rate-limit identity.
        self.CONFIG_KWARGS = {
            **UvicornWorker.CONFIG_KWARGS,
            "proxy_headers": False,
            "server_header": False,
            "limit_concurrency": load_settings().max_connections,
        }
        super().__init__(*args, **kwargs)

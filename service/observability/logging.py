"""JSON logs for the app, uvicorn and gunicorn alike, each line carrying request and trace IDs."""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from asgi_correlation_id import correlation_id
from opentelemetry import trace


class ContextFilter(logging.Filter):
    """Adds request_id, trace_id and span_id from the current request/span to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = correlation_id.get() or ""
        ctx = trace.get_current_span().get_span_context()
        if not getattr(record, "trace_id", None):
            record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else ""
            record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else ""
        return True


def logging_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(trace_id)s %(span_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "timestamp": False,
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "default", "filters": ["context"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"default": formatter},
        "handlers": {"stderr": {**handler, "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # The access log is ours (one line per request with timings); uvicorn's would duplicate it.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"level": level},
            "gunicorn.error": {"level": level},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    logging.config.dictConfig(logging_config(level, fmt))

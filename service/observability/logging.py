"""JSON logs for the app, uvicorn and gunicorn alike, each line carrying request and trace IDs."""

from __future__ import annotations

import logging
from typing import Any

from asgi_correlation_id import correlation_id
from opentelemetry import trace

# Every JSON line has these keys (renamed: asctime->time, levelname->level, name->logger, process->pid);
# the access log adds method, path, status, duration_ms, client, model, version.
JSON_FIELDS = ("asctime", "levelname", "name", "process", "message", "request_id", "trace_id", "span_id")


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
            "fmt": " ".join(f"%({name})s" for name in JSON_FIELDS),
            # pid tells gunicorn workers apart in one pod's log stream.
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"},
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
            # Explicit handlers, not propagation: gunicorn sets propagate=False on its error logger, and
            # UvicornWorker copies gunicorn.error's handlers onto uvicorn.error; without these both are silent.
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "gunicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            # It warns about a replaced X-Request-ID before the new ID is set, so its line would lack it;
            # the request's access line carries the new ID anyway.
            "asgi_correlation_id": {"level": "ERROR"},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # Sampled prediction records (ML_API_PREDICTION_LOG_RATE) are data, not chatter: the rate is
            # their switch, so a quieter ML_API_LOG_LEVEL does not drop them.
            "service.predictions": {"level": "INFO"},
        },
    }

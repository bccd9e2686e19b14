"""docs/operations.md stays true: every setting with its current default, every metric, every span."""

from __future__ import annotations

import json
import re

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from service.observability.metrics import InferenceMetrics
from service.settings import Settings
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "operations.md").read_text()
ROW = re.compile(r"^\| `(ML_API_[A-Z_]+)` \| (`(?P<default>[^`]*)`|(?P<unset>unset)) \|", re.M)


def _rendered(value: object) -> str | None:
    """A default the way the table writes it (None = the doc says "unset")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return json.dumps([v.model_dump(include={"name", "version", "source"}) for v in value], separators=(",", ":"))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def test_settings_table_lists_every_setting_with_its_default() -> None:
    documented = {m.group(1): m.group("default") for m in ROW.finditer(DOC)}
    fields = {f"ML_API_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert sorted(documented) == sorted(fields)
    for variable, field in fields.items():
        expected = _rendered(field.get_default(call_default_factory=True))
        assert documented[variable] == expected, variable  # None: the row says "unset"


def test_every_metric_and_span_is_documented() -> None:
    registry = CollectorRegistry()
    InferenceMetrics(registry)
    names = {metric.name for metric in registry.collect()}
    names = {f"{n}_total" if n in ("ml_api_predictions", "ml_api_jobs") else n for n in names}
    names |= {
        "http_requests_total",
        "http_request_duration_seconds",
        "http_request_size_bytes",
        "http_response_size_bytes",
    }
    for name in sorted(names):
        assert f"`{name}`" in DOC, name
    for span in ("decode", "preprocess", "queue_wait", "inference", "http.request_id"):
        assert f"`{span}`" in DOC, span

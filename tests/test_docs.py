"""docs/operations.md stays true: every setting with its default and description, every metric, every span."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from scripts import settings_doc
from service.observability.metrics import InferenceMetrics
from service.observability.protocols import ProtocolMetrics
from service.settings import Settings
from tests.conftest import ROOT

DOC = (ROOT / "docs" / "operations.md").read_text()
ROW = re.compile(r"^\| `(ML_API_[A-Z_]+)` \| (`[^`]*`|unset) \| (?P<meaning>.+) \|$", re.M)


def test_the_settings_table_is_the_one_generated_from_settings() -> None:
    assert settings_doc.main(["--check"]) == 0, "docs/operations.md is stale: run python scripts/settings_doc.py"


def test_every_setting_has_a_row_with_its_description() -> None:
    documented = {m.group(1): m.group("meaning") for m in ROW.finditer(DOC)}
    fields = {f"ML_API_{name.upper()}": field for name, field in Settings.model_fields.items()}
    assert sorted(documented) == sorted(fields)
    for variable, field in fields.items():
        assert field.description, f"{variable} has no description"
        assert documented[variable] == field.description


def test_every_metric_and_span_is_documented() -> None:
    registry = CollectorRegistry()
    InferenceMetrics(registry)
    ProtocolMetrics(registry)
    # Counters are exposed (and documented) with their _total suffix.
    names = {f"{m.name}_total" if m.type == "counter" else m.name for m in registry.collect()}
    names |= {
        "http_requests_total",
        "http_request_duration_seconds",
        "http_request_size_bytes",
        "http_response_size_bytes",
    }
    for name in sorted(names):
        assert f"`{name}`" in DOC, name
    for span in ("decode", "preprocess", "queue_wait", "inference", "http.request_id", "rpc.request_id"):
        assert f"`{span}`" in DOC, span

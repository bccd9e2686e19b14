"""k8s/observability/otel-collector.yaml: the per-node OpenTelemetry Collector."""

from __future__ import annotations

import pytest
import yaml

from tests.observability.upstream import find, render

NAME = "otel-collector.yaml"


@pytest.mark.helm
def test_rendered_collector_pipelines_send_traces_to_tempo_and_logs_to_loki() -> None:
    objects = render(NAME)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    # The chart names the DaemonSet "<fullname>-agent"; the Service keeps the fullname.
    assert ("DaemonSet", "otel-collector-agent") in kinds and ("Service", "otel-collector") in kinds
    config = find(objects, "ConfigMap")
    relay = yaml.safe_load(config["data"]["relay"])
    assert set(relay["receivers"]) == {"otlp", "file_log", "prometheus"}
    assert relay["service"]["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]
    assert relay["service"]["pipelines"]["logs"]["exporters"] == ["otlphttp/loki"]
    assert "k8s_attributes" in relay["service"]["pipelines"]["traces"]["processors"]

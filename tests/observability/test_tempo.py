"""k8s/observability/tempo.yaml: the trace store, OTLP only, and its metrics generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability.upstream import find, render, values

NAME = "tempo.yaml"
PROMETHEUS_WRITE = "http://kps-prometheus.monitoring.svc:9090/api/v1/write"


def _tempo_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config = next(o for o in objects if o["kind"] == "ConfigMap" and "tempo.yaml" in o.get("data", {}))
    parsed: dict[str, Any] = yaml.safe_load(config["data"]["tempo.yaml"])
    return parsed


def test_metrics_generator_runs_the_span_metrics_and_service_graph_processors() -> None:
    tempo = values(NAME)["tempo"]
    assert tempo["metricsGenerator"]["enabled"] is True
    # Enabled alone, the generator runs no processor: no span metrics, an empty service graph.
    assert tempo["overrides"]["defaults"]["metrics_generator"]["processors"] == ["service-graphs", "span-metrics"]
    assert tempo["metricsGenerator"]["remoteWriteUrl"] == PROMETHEUS_WRITE
    # ... written into a Prometheus that accepts remote writes.
    kps = values("kube-prometheus-stack.yaml")["prometheus"]["prometheusSpec"]
    assert kps["enableRemoteWriteReceiver"] is True


def test_only_otlp_receivers_are_configured() -> None:
    receivers = values(NAME)["tempo"]["receivers"]
    assert set(receivers["otlp"]["protocols"]) == {"grpc", "http"}
    assert receivers["jaeger"]["protocols"] == dict.fromkeys(("grpc", "thrift_binary", "thrift_compact", "thrift_http"))
    assert "jaeger" not in values(NAME)["config"]


@pytest.mark.helm
def test_rendered_tempo_receives_otlp_on_4317() -> None:
    objects = render(NAME)
    find(objects, "Service", "tempo")
    tempo = _tempo_config(objects)
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"


@pytest.mark.helm
def test_rendered_tempo_config_has_the_processors_remote_write_and_no_jaeger() -> None:
    objects = render(NAME)
    tempo = _tempo_config(objects)
    assert list(tempo["distributor"]["receivers"]) == ["otlp"]
    assert tempo["overrides"]["defaults"]["metrics_generator"]["processors"] == ["service-graphs", "span-metrics"]
    assert tempo["metrics_generator"]["storage"]["remote_write"] == [{"url": PROMETHEUS_WRITE}]
    ports = find(objects, "Service", "tempo")["spec"]["ports"]
    assert not [p["name"] for p in ports if "jaeger" in p["name"]]
    assert {p["port"] for p in ports} >= {3200, 4317, 4318}


@pytest.mark.helm
def test_rendered_tempo_config_differs_from_the_charts_own_only_in_the_receivers(tmp_path: Path) -> None:
    # The same values without the `config` override: the pinned chart's own template.
    own = {k: v for k, v in values(NAME).items() if k != "config"}
    (tmp_path / "no-config.yaml").write_text(yaml.safe_dump(own))
    chart_config = _tempo_config(render(NAME, values_file=tmp_path / "no-config.yaml"))
    ours = _tempo_config(render(NAME))
    # The chart's template hands Tempo every receiver, Jaeger included (with no protocols here).
    assert chart_config["distributor"]["receivers"].pop("jaeger") == {"protocols": {}}
    assert ours == chart_config

"""The generated Grafana dashboards: up to date, portable (`${datasource}`), complete."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.observability.promql_sources import DASHBOARD_DIR, is_logql, iter_panels, load_generator, metric_names

DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
# The prediction-log panel reads Loki through its own variable (the pods' logs, via the collector).
LOGS_REF = {"type": "loki", "uid": "${logs}"}
# Metrics with model/version labels: their panels must honour the `model` variable.
MODEL_LABELLED = {
    "ml_api_inference_duration_seconds_bucket",
    "ml_api_queue_wait_seconds_bucket",
    "ml_api_queue_depth",
    "ml_api_batch_size_bucket",
    "ml_api_batch_size_sum",
    "ml_api_batch_size_count",
    "ml_api_predictions_total",
    "ml_api_model_loaded",
    "ml_api_shadow_agreement_total",
    "ml_api_shadow_requests_total",
    "ml_api_shadow_duration_seconds_bucket",
    "ml_api_predicted_class_total",
}
# Metrics with a protocol label: their panels must honour the `protocol` variable.
PROTOCOL_LABELLED = {
    "ml_api_protocol_requests_total",
    "ml_api_protocol_request_duration_seconds_bucket",
}


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    dashboards: dict[str, dict[str, Any]] = load_generator().build_dashboards()
    return dashboards


@pytest.fixture(scope="module")
def overview() -> dict[str, Any]:
    model: dict[str, Any] = json.loads((DASHBOARD_DIR / "ml-api-overview.json").read_text())
    return model


def test_committed_dashboards_equal_a_fresh_generation(generated: dict[str, dict[str, Any]]) -> None:
    generator = load_generator()
    committed = {p.name: p.read_text() for p in DASHBOARD_DIR.glob("*.json")}
    fresh = {name: generator.render(model) for name, model in generated.items()}
    assert committed.keys() == fresh.keys(), "dashboard files differ from the generator's: run `make dashboards`"
    for name, text in fresh.items():
        assert committed[name] == text, f"{name} is stale: run `make dashboards`"


def test_generator_check_mode_flags_a_stale_file(tmp_path: Any, generated: dict[str, dict[str, Any]]) -> None:
    generator = load_generator()
    assert generator.main(["--out", str(tmp_path)]) == 0
    assert generator.main(["--out", str(tmp_path), "--check"]) == 0
    target = tmp_path / next(iter(generated))
    target.write_text(target.read_text().replace('"ml-api"', '"renamed"', 1))
    assert generator.main(["--out", str(tmp_path), "--check"]) == 1


def test_every_dashboard_file_is_one_dashboard_of_valid_json() -> None:
    files = sorted(DASHBOARD_DIR.glob("*.json"))
    assert [f.name for f in files] == ["ml-api-overview.json"]
    for path in files:
        model = json.loads(path.read_text())
        assert model["uid"] and model["title"] and isinstance(model["panels"], list)
        # The chart stores each file in one ConfigMap (1 MiB cap, shared with its metadata).
        assert path.stat().st_size < 512 * 1024


def _datasource_refs(node: Any, path: str = "$") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((f"{path}.datasource", value))
            found.extend(_datasource_refs(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_datasource_refs(value, f"{path}[{i}]"))
    return found


def test_datasource_is_a_variable_and_no_uid_is_hard_coded(overview: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["logs"]["type"] == "datasource" and variables["logs"]["query"] == "loki"
    refs = _datasource_refs(overview)
    assert refs, "no datasource references at all"
    wrong = [(where, ref) for where, ref in refs if ref not in (DATASOURCE_REF, LOGS_REF)]
    assert not wrong, f"datasource references other than ${{datasource}} and ${{logs}}: {wrong}"
    for panel in iter_panels(overview["panels"]):
        if panel["type"] == "row":
            continue
        expected = LOGS_REF if panel["type"] == "logs" else DATASOURCE_REF
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], f"panel without queries: {panel['title']}"
        for target in panel["targets"]:
            assert target["datasource"] == expected, (panel["title"], target["refId"])
    logs_panels = [p["title"] for p in iter_panels(overview["panels"]) if p["type"] == "logs"]
    assert logs_panels == ["Recent predictions"]


def test_namespace_release_model_and_protocol_variables_default_to_all_matching_absent_labels(
    overview: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    assert list(variables) == ["datasource", "logs", "namespace", "release", "model", "protocol"]
    assert variables["protocol"]["query"]["query"] == (
        'label_values(ml_api_protocol_requests_total{namespace=~"$namespace", job=~"$release"}, protocol)'
    )
    for name in ("namespace", "release", "model", "protocol"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE_REF
        assert variable["includeAll"] is True and variable["multi"] is True
        # ".*" (unlike Grafana's default alternation of known values) matches series without the label.
        assert variable["allValue"] == ".*"
        assert variable["current"]["value"] == "$__all"


def test_every_query_is_scoped_by_namespace_and_release(overview: dict[str, Any]) -> None:
    for panel in iter_panels(overview["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            if is_logql(target):
                # Loki stream labels from the collector's Kubernetes attributes; the container name is the
                # equality matcher LogQL needs besides regexes that may match everything.
                for matcher in (
                    'k8s_namespace_name=~"$namespace"',
                    'k8s_deployment_name=~"$release"',
                    'k8s_container_name="ml-api"',
                ):
                    assert matcher in expr, (panel["title"], expr)
                assert '| json | logger="service.predictions"' in expr and 'model=~"$model"' in expr
                continue
            assert 'namespace=~"$namespace"' in expr, (panel["title"], expr)
            assert 'job=~"$release"' in expr or 'horizontalpodautoscaler=~"$release"' in expr, (panel["title"], expr)
            if metric_names(expr) & MODEL_LABELLED:
                assert expr.count('model=~"$model"') == len(re.findall(r"ml_api_[a-z_]+\{", expr)), expr
            if metric_names(expr) & PROTOCOL_LABELLED:
                assert expr.count('protocol=~"$protocol"') == len(re.findall(r"ml_api_[a-z_]+\{", expr)), expr


def test_issue_panels_are_present(overview: dict[str, Any]) -> None:
    titles = [p["title"] for p in iter_panels(overview["panels"]) if p["type"] != "row"]
    for title in (
        "Request rate by route",
        "Error ratio",
        "Latency by route (p50/p95/p99)",
        "In-flight requests per pod",
        "Queue depth",
        "Batch size distribution",
        "Inference time per batch (p50/p95/p99)",
        "Queue wait (p50/p95/p99)",
        "Predictions by outcome",
        "Inference requests by protocol",
        "Server error ratio by protocol",
        "Latency by protocol (p50/p95/p99)",
        "Replicas vs HPA desired",
        "CPU usage per pod",
        "Memory working set per pod",
        "CPU throttling",
        "GPU fallback (serving on CPU)",
        "GPU utilisation",
        "GPU memory used",
        "Shadow agreement (top-1)",
        "Shadow copies by outcome",
        "Shadow latency (p50/p95/p99)",
        "Predicted class distribution",
        "Model config reloads",
        "Model config generation and sync",
        "Recent predictions",
    ):
        assert title in titles
    assert len(titles) == len(set(titles))


def test_latency_panels_request_exemplars_and_show_p50_p95_p99(overview: dict[str, Any]) -> None:
    panels = {p["title"]: p for p in iter_panels(overview["panels"])}
    for title in (
        "Latency by route (p50/p95/p99)",
        "Latency by protocol (p50/p95/p99)",
        "Inference time per batch (p50/p95/p99)",
        "Queue wait (p50/p95/p99)",
    ):
        targets = panels[title]["targets"]
        assert [t["exemplar"] for t in targets] == [True, True, True]
        assert [re.match(r"histogram_quantile\(([0-9.]+),", t["expr"]).group(1) for t in targets] == [  # type: ignore[union-attr]
            "0.5",
            "0.95",
            "0.99",
        ]
    route = panels["Latency by route (p50/p95/p99)"]["targets"][0]["expr"]
    assert "sum by (le, handler) (rate(http_request_duration_seconds_bucket{" in route
    protocol = panels["Latency by protocol (p50/p95/p99)"]["targets"][0]["expr"]
    assert "sum by (le, protocol) (rate(ml_api_protocol_request_duration_seconds_bucket{" in protocol


def test_protocol_panels_break_inference_down_by_protocol(overview: dict[str, Any]) -> None:
    panels = {p["title"]: p for p in iter_panels(overview["panels"])}
    (requests,) = panels["Inference requests by protocol"]["targets"]
    assert requests["expr"] == (
        "sum by (protocol, outcome) (rate(ml_api_protocol_requests_total"
        '{namespace=~"$namespace", job=~"$release", protocol=~"$protocol"}[$__rate_interval]))'
    )
    assert requests["legendFormat"] == "{{protocol}} {{outcome}}"
    (ratio,) = panels["Server error ratio by protocol"]["targets"]
    assert 'outcome=~"error|unavailable|timeout"' in ratio["expr"]
    assert ratio["expr"].count("sum by (protocol)") == 3


def test_gpu_panels_sit_in_a_collapsed_row(overview: dict[str, Any]) -> None:
    rows = [p for p in overview["panels"] if p["type"] == "row"]
    gpu = [r for r in rows if r["title"].startswith("GPU")]
    assert len(gpu) == 1 and gpu[0]["collapsed"] is True
    assert [p["title"] for p in gpu[0]["panels"]] == ["GPU utilisation", "GPU memory used"]
    for panel in gpu[0]["panels"]:
        assert all("DCGM_FI_DEV_" in t["expr"] for t in panel["targets"])
        assert panel["fieldConfig"]["defaults"]["noValue"].startswith("No GPU metrics")


def test_panel_ids_are_unique_and_the_grid_is_24_wide(overview: dict[str, Any]) -> None:
    panels = iter_panels(overview["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_committed_json_round_trips_through_the_sdk_dashboard_model(overview: dict[str, Any]) -> None:
    # Decoding into grafana-foundation-sdk's typed model and encoding back loses anything that is
    # not part of the dashboard schema (misspelt keys, wrong nesting), so equality means conformance.
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    assert json.loads(json.dumps(Dashboard.from_json(overview), cls=JSONEncoder)) == overview

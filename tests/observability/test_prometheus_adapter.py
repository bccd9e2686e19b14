"""k8s/observability/prometheus-adapter.yaml: `ml_api_inflight_requests` as a Pods custom metric."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.observability.upstream import render, values

NAME = "prometheus-adapter.yaml"


def test_adapter_exposes_inflight_requests_as_a_pods_metric() -> None:
    config = values(NAME)
    assert config["rules"]["default"] is False
    (rule,) = config["rules"]["custom"]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert re.fullmatch(rule["name"]["matches"], "ml_api_inflight_requests")
    assert rule["name"]["as"] == "ml_api_inflight_requests"
    for template in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert template in rule["metricsQuery"]


@pytest.mark.helm
def test_rendered_adapter_config_holds_only_the_inflight_rule() -> None:
    objects = render(NAME)
    config = next(o for o in objects if o["kind"] == "ConfigMap" and "config.yaml" in o.get("data", {}))
    rules = yaml.safe_load(config["data"]["config.yaml"])["rules"]
    assert [r["name"]["as"] for r in rules] == ["ml_api_inflight_requests"]

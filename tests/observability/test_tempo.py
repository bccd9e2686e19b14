"""k8s/observability/tempo.yaml: the trace store and its metrics generator."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.observability.upstream import find, render

NAME = "tempo.yaml"


def _tempo_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    config = next(o for o in objects if o["kind"] == "ConfigMap" and "tempo.yaml" in o.get("data", {}))
    parsed: dict[str, Any] = yaml.safe_load(config["data"]["tempo.yaml"])
    return parsed


@pytest.mark.helm
def test_rendered_tempo_receives_otlp_on_4317() -> None:
    objects = render(NAME)
    find(objects, "Service", "tempo")
    tempo = _tempo_config(objects)
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"

"""k8s/observability/loki.yaml: one monolithic Loki, the target of trace -> logs links."""

from __future__ import annotations

import pytest

from tests.observability.upstream import render

NAME = "loki.yaml"


@pytest.mark.helm
def test_rendered_loki_is_one_statefulset_behind_the_loki_service() -> None:
    objects = render(NAME)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Service", "loki") in kinds
    assert any(o["kind"] == "StatefulSet" and o["metadata"]["name"] == "loki" for o in objects)

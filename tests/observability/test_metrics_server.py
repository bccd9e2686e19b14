"""k8s/observability/metrics-server.yaml: resource metrics on kind."""

from __future__ import annotations

import pytest

from tests.observability.upstream import find, render, values

NAME = "metrics-server.yaml"


def test_metrics_server_trusts_kind_kubelets() -> None:
    assert values(NAME)["args"] == ["--kubelet-insecure-tls"]


@pytest.mark.helm
def test_rendered_metrics_server_skips_kubelet_tls_verification() -> None:
    deployment = find(render(NAME), "Deployment")
    assert "--kubelet-insecure-tls" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]

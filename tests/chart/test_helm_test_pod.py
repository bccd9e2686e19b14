"""templates/tests/test-connection.yaml: the `helm test` pod."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from tests.chart.helm import (
    FULLNAME,
    NAMESPACE,
    env_of,
    find,
    one,
    render,
)

pytestmark = pytest.mark.helm


def test_helm_test_pod_checks_readiness_and_one_prediction(default_docs: list[dict[str, Any]]) -> None:
    pod = one(default_docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    c = pod["spec"]["containers"][0]
    assert c["image"] == "docker.io/curlimages/curl:8.11.1"
    env = env_of(c)
    assert env["BASE_URL"]["value"] == f"http://{FULLNAME}.{NAMESPACE}.svc:8000"
    script = c["args"][0]
    assert '"$BASE_URL/health/ready"' in script
    assert '"$BASE_URL/api/v1/predict"' in script
    png = base64.b64decode(env["IMAGE_B64"]["value"], validate=True)
    with Image.open(io.BytesIO(png)) as img:
        assert (img.format, img.size) == ("PNG", (8, 8))


def test_helm_test_image_is_overridable_and_can_be_disabled(helm: str) -> None:
    docs = render(sets=["tests.image.registry=mirror.local", "tests.image.repository=tools/curl", "tests.image.tag=1"])
    assert one(docs, "Pod")["spec"]["containers"][0]["image"] == "mirror.local/tools/curl:1"
    assert not find(render(sets=["tests.enabled=false"]), "Pod")

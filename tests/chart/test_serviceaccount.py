"""templates/serviceaccount.yaml: a ServiceAccount without a mounted token."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.helm import (
    FULLNAME,
    one,
    pod_spec,
)

pytestmark = pytest.mark.helm


def test_service_account_token_not_mounted(default_docs: list[dict[str, Any]]) -> None:
    sa = one(default_docs, "ServiceAccount", FULLNAME)
    assert sa["automountServiceAccountToken"] is False
    spec = pod_spec(default_docs)
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == FULLNAME

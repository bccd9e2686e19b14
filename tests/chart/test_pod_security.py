"""Every pod the chart renders (server, init containers, dev Redis, helm test pod) meets the restricted
Pod Security Standard."""

from __future__ import annotations

import pytest

from tests.chart.helm import (
    CaseDocs,
    all_containers,
    ci_cases,
    pod_specs,
)

pytestmark = pytest.mark.helm

CASES = list(ci_cases())


@pytest.mark.parametrize("case", CASES)
def test_restricted_pod_security_on_every_container(case_docs: CaseDocs, case: str) -> None:
    specs = list(pod_specs(case_docs(case)))
    assert specs, "no workloads rendered"
    for where, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert pod_sc.get("fsGroup") == 10001, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        assert not [v for v in spec.get("volumes", []) if "hostPath" in v], where
        for c in all_containers(spec):
            at = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, at
            assert sc.get("privileged") is False, at
            assert sc.get("capabilities") == {"drop": ["ALL"]}, at
            assert sc.get("readOnlyRootFilesystem") is True, at
            assert sc.get("runAsNonRoot") is True, at
            assert sc.get("runAsUser") == 10001 and sc.get("runAsGroup") == 10001, at
            assert sc.get("seccompProfile") == {"type": "RuntimeDefault"}, at
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})), at
            assert {"cpu", "memory"} <= set(res.get("limits", {})), at
            # A read-only root needs somewhere writable for Python and torch temp files.
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, at
            tmp = next(v for v in spec["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in tmp, at

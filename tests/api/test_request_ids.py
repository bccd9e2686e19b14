"""X-Request-ID rules against a real process: kept when valid, replaced by a UUID4 everywhere otherwise."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.secured import AUTH, upload
from tests.servers import Server

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_valid_request_id_is_echoed_in_body_header_and_access_line(live: Server, digit_pngs: list[bytes]) -> None:
    rid = "ops.valid-ID_1"
    response = upload(live, digit_pngs[0], {**AUTH, "X-Request-ID": rid})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == rid
    assert response.json()["request_id"] == rid
    lines = live.wait_for_log(lambda r: r.get("logger") == "service.access" and r["request_id"] == rid)
    assert len(lines) == 1


@pytest.mark.parametrize(
    "sent",
    ["x" * 129, "bad id!", "semi;colon", "slash/inside", "ümlaut"],
    ids=["too-long", "space-and-bang", "semicolon", "slash", "non-ascii"],
)
def test_invalid_request_id_is_replaced_by_a_uuid4_everywhere(live: Server, sent: str) -> None:
    response = httpx.get(
        f"{live.base}/api/v1/jobs/no-such-job", headers={**AUTH, "X-Request-ID": sent.encode()}, timeout=10
    )
    assert response.status_code == 404
    rid = response.headers["X-Request-ID"]
    assert UUID4.fullmatch(rid), rid
    assert response.json() == {
        "error": "JOB_NOT_FOUND",
        "message": "no job 'no-such-job' (unknown or expired)",
        "path": "/api/v1/jobs/no-such-job",
        "request_id": rid,
    }
    assert len(live.wait_for_log(lambda r: r.get("request_id") == rid)) == 1


def test_longest_valid_request_id_is_kept(live: Server) -> None:
    rid = "a" * 128
    response = httpx.get(f"{live.base}/health", headers={"X-Request-ID": rid}, timeout=10)
    assert response.headers["X-Request-ID"] == rid

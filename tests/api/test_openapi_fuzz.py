"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis CLI).

A real server process; URL fetching is off so generated URLs never leave the machine. The CLI is
used rather than schemathesis' pytest plugin, which does not support this pytest version.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import live_server

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


# URL fetching off, so generated URLs never leave the machine.
SERVER_ENV = {"ML_API_URL_FETCH_ENABLED": "false", "ML_API_LOG_LEVEL": "WARNING", "ML_API_MAX_BATCH_ITEMS": "8"}


def schemathesis(env: dict[str, str], *args: str) -> str:
    """Run the schemathesis CLI against a live server with ``env``; returns its output, failing on findings."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is a dev dependency"
    with live_server({**SERVER_ENV, **env}) as base:
        result = subprocess.run(
            [cli, "--config-file", str(CONFIG), "run", f"{base}/openapi.json", *args,
             "--request-timeout", "30", "--generation-deterministic", "--no-color"],
            capture_output=True,
            text=True,
            timeout=540,
        )  # fmt: skip
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return result.stdout


def test_no_server_errors_and_every_response_matches_the_documented_schema() -> None:
    schemathesis({}, "--checks", CHECKS, "--max-examples", "25")


def test_stateful_runs_over_jobs_with_api_keys_on_give_no_server_errors() -> None:
    """Sequences of calls follow the OpenAPI links (a submitted job's status and events), with API keys
    required: no 5xx, schema-conformant answers, and unauthenticated calls refused."""
    output = schemathesis(
        {"ML_API_API_KEYS": '["fuzz-key-1"]'},
        "--checks", CHECKS + ",ignored_auth",
        "--phases", "examples,stateful",
        "--header", "Authorization: Bearer fuzz-key-1",
        "--max-examples", "20",
    )  # fmt: skip
    assert "Stateful" in output

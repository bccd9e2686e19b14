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


def test_no_server_errors_and_every_response_matches_the_documented_schema() -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is a dev dependency"
    env = {"ML_API_URL_FETCH_ENABLED": "false", "ML_API_LOG_LEVEL": "WARNING", "ML_API_MAX_BATCH_ITEMS": "8"}
    with live_server(env) as base:
        result = subprocess.run(
            [
                cli,
                "--config-file",
                str(CONFIG),
                "run",
                f"{base}/openapi.json",
                "--checks",
                CHECKS,
                "--max-examples",
                "25",
                "--request-timeout",
                "30",
                "--generation-deterministic",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=540,
        )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_stateful_runs_over_jobs_with_api_keys_on_give_no_server_errors() -> None:
    """Sequences of calls follow the OpenAPI links (a submitted job's status and events), with API keys
    required: no 5xx, schema-conformant answers, and unauthenticated calls refused."""
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None
    env = {
        "ML_API_URL_FETCH_ENABLED": "false",
        "ML_API_LOG_LEVEL": "WARNING",
        "ML_API_MAX_BATCH_ITEMS": "8",
        "ML_API_API_KEYS": '["fuzz-key-1"]',
    }
    with live_server(env) as base:
        result = subprocess.run(
            [
                cli,
                "--config-file",
                str(CONFIG),
                "run",
                f"{base}/openapi.json",
                "--checks",
                CHECKS + ",ignored_auth",
                "--phases",
                "examples,stateful",
                "--header",
                "Authorization: Bearer fuzz-key-1",
                "--max-examples",
                "20",
                "--request-timeout",
                "30",
                "--generation-deterministic",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=540,
        )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Stateful" in result.stdout

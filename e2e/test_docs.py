"""The README's "Manual calls" run verbatim against each target, so the docs cannot rot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e.targets import Target

DOC = Path(__file__).resolve().parent.parent / "README.md"
MARKED_BLOCK = re.compile(r"<!-- e2e: manual-calls -->\s*\n```bash\n(.*?)\n```", re.S)


def manual_call_blocks() -> list[str]:
    return MARKED_BLOCK.findall(DOC.read_text())


def test_readme_has_manual_call_blocks() -> None:
    blocks = manual_call_blocks()
    assert len(blocks) == 5
    assert all("curl" in block for block in blocks)


@pytest.mark.slow
def test_manual_calls_in_the_docs_work_against_the_target(target: Target, tmp_path: Path) -> None:
    for tool in ("bash", "curl", "base64", "sed", "grep"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not on PATH: the documented calls need it")
    target.refresh()
    outputs = []
    # One shell per block, in order, in one directory: later blocks reuse the PNG the second writes.
    for number, block in enumerate(manual_call_blocks(), start=1):
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "ML_API": target.base_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (
            f"block {number} failed ({proc.returncode}):\n{block}\n{proc.stdout}\n{proc.stderr}"
        )
        outputs.append(proc.stdout)
    health, predict, stream_and_job, errors_and_metrics, v2 = outputs
    assert '{"status":"ready"}' in health
    assert '"name":"digits"' in health
    # Three transports, each with the 3 on top.
    assert len(re.findall(r'"predictions":\[\{"label":"3"', predict)) == 3
    # SSE payloads may be spaced JSON: match loosely on whitespace.
    assert len(re.findall(r'"label":\s*"3"', stream_and_job)) >= 3
    assert "data: [DONE]" in stream_and_job
    assert '"status":"pending"' in stream_and_job
    last_event = stream_and_job.strip().splitlines()[-1]
    assert re.search(r'"status":\s*"completed"', last_event), last_event
    assert '"error":"JOB_NOT_FOUND"' in errors_and_metrics
    assert '"request_id":"docs-example-1"' in errors_and_metrics
    assert re.search(r'^ml_api_predictions_total\{.*outcome="success".*\} [1-9]', errors_and_metrics, re.M)
    assert '{"ready":true}' in v2
    assert '"inputs":[{"name":"image","datatype":"BYTES","shape":[-1]}' in v2
    assert re.search(r'"datatype":"BYTES","shape":\[1,2\],"data":\["[0-9.]+:3:3",', v2), v2

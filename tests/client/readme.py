"""The README's CLI block and the digit PNG it uses, as the docs tests run them."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "README.md"
DEFAULT_URL_IN_DOCS = "http://127.0.0.1:8000"
CLI_BLOCK = re.compile(r"<!-- e2e: cli-calls -->\s*\n```bash\n(.*?)\n```", re.S)
PYTHON_BLOCK = re.compile(r"<!-- test: client-example -->\s*\n```python\n(.*?)\n```", re.S)
DIGIT_LINE = re.compile(r"^echo '([A-Za-z0-9+/=]+)' \| base64 -d > digit3\.png$", re.M)


def cli_block() -> str:
    [block] = CLI_BLOCK.findall(README.read_text())
    return block


def python_block() -> str:
    [block] = PYTHON_BLOCK.findall(README.read_text())
    return block


def write_digit3(directory: Path) -> None:
    """The PNG the README's second manual-calls block writes (the CLI block reuses it)."""
    [encoded] = DIGIT_LINE.findall(README.read_text())
    (directory / "digit3.png").write_bytes(base64.b64decode(encoded))


def ml_api_script() -> Path | None:
    """The installed console script: on PATH, or beside this interpreter (an unactivated venv)."""
    found = shutil.which("ml-api") or shutil.which("ml-api", path=str(Path(sys.executable).parent))
    return Path(found) if found else None


def run_cli_block(script: Path, base_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{script.parent}:/usr/local/bin:/usr/bin:/bin", "ML_API": base_url, "HOME": str(cwd)}
    env.update({k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL")})
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", cli_block()],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

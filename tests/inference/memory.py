"""Run a snippet in a fresh interpreter and report its outcome and peak memory growth.

Memory is measured where it is really spent: Pillow and torch allocate with malloc, which
tracemalloc does not see. The peak (VmHWM) is reset to the current RSS just before the measured
part, and an address-space limit turns a runaway allocation into MemoryError instead of letting
it take the shared machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass

from tests.conftest import ROOT

_TEMPLATE = """
import json, re, resource, sys

def _status(key):
    return int(re.search(rf"^{{key}}:\\s+(\\d+)", open("/proc/self/status").read(), re.M).group(1))

{setup}

resource.setrlimit(resource.RLIMIT_AS, ((_status("VmSize") << 10) + ({limit_mib} << 20),) * 2)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
_base = _status("VmRSS")
try:
{run}
    _outcome, _message = "ok", ""
except BaseException as exc:
    _outcome, _message = type(exc).__name__, str(exc)[:300]
print(json.dumps({{"outcome": _outcome, "message": _message, "growth_kib": _status("VmHWM") - _base}}))
"""


@dataclass(frozen=True)
class Measured:
    outcome: str
    message: str
    growth_mib: float


def measure(setup: str, run: str, *, limit_mib: int = 1024, timeout: float = 240) -> Measured:
    """``setup`` (imports, inputs) runs unmeasured; ``run`` is measured under ``limit_mib`` more address space."""
    code = _TEMPLATE.format(
        setup=textwrap.dedent(setup), run=textwrap.indent(textwrap.dedent(run), "    "), limit_mib=limit_mib
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    return Measured(result["outcome"], result["message"], result["growth_kib"] / 1024)

"""How long a models-file change takes to serve, and what it costs the requests in flight.

    python -m bench.reload                         # digits, then resnet18 (random weights)
    python -m bench.reload --models digits --repeats 2

One server reading a ConfigMap-style models file (``..data`` symlink swaps), polled every second
(the default ``ML_API_MODELS_FILE_POLL_S``), under two closed-loop clients. Each repeat swaps in a
file whose newest version is new (listed last, so it takes the unversioned traffic) and removes the
previous one. Reported per model: swap to the first response from the new version (median and
max), the service's own load-and-warm time for the reload (its "applied ... in N s" log line), the
unload time of the removed version, the clients' p50/p99 during the whole run, and failed requests
(must be 0). Kubernetes adds kubelet's ConfigMap refresh (about 60-90 s) before the swap happens.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.images import make_jpeg
from bench.opsload import RESNET18, ClosedLoop, percentiles, service, upload
from bench.opsreport import reload_table


def spec(model: str, version: str) -> dict[str, Any]:
    extra = {**RESNET18, "seed": int(version)} if model == "resnet18" else {"source": "bundled"}
    return {"name": model, "version": version, **extra}


def measure(model: str, repeats: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    image = make_jpeg()
    switch_s: list[float] = []
    with (
        tempfile.TemporaryDirectory() as work,
        service(Path(work), {"models": [spec(model, "1")], "default_model": model}, env) as (
            svc,
            mount,
        ),
    ):
        loop = ClosedLoop(svc.base, upload(image), clients=2).start()
        time.sleep(2.0)
        for index in range(repeats):
            new = str(index + 2)
            generation = svc.generation()
            swapped = mount.write({"models": [spec(model, new)], "default_model": model})
            svc.wait(lambda g=generation: svc.generation() > g, f"generation {generation + 1}")
            first = svc.wait(
                lambda t=swapped, v=new: next(
                    (s.started + s.seconds for s in list(loop.samples) if s.version == v and s.started >= t), None
                ),
                f"version {new} to answer",
            )
            switch_s.append(first - swapped)
            time.sleep(2.0)  # let the removed version drain and unload under load
        loop.stop()
        applied = [
            float(m.group(1))
            for r in svc.log_lines("applied: generation")
            if (m := re.search(r"in ([0-9.]+)s", r["message"]))
        ]
        unloaded = [
            float(m.group(1))
            for r in svc.log_lines(r"unloaded \S+ in")
            if (m := re.search(r"in ([0-9.]+)s", r["message"]))
        ]
    ok = [s.seconds for s in loop.samples if s.status == 200]
    return {
        "model": model,
        "repeats": repeats,
        "service_env": env or {},
        "swap_to_first_new_answer_s": {"median": statistics.median(switch_s), "max": max(switch_s)},
        "load_and_warm_s": {"median": statistics.median(applied), "max": max(applied)} if applied else None,
        "unload_s": {"median": statistics.median(unloaded), "max": max(unloaded)} if unloaded else None,
        "requests": len(loop.samples),
        "failed": len(loop.samples) - len(ok) + len(loop.errors),
        "latency_ms": {k: v * 1000 for k, v in percentiles(ok).items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--env", action="append", default=[], metavar="ML_API_X=V", help="extra service settings")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    results = [measure(model, args.repeats, env) for model in args.models.split(",")]
    print("\n".join(reload_table(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

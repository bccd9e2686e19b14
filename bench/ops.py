"""``python -m bench ops`` (``make bench-ops``; ``make bench`` runs it after the throughput levels):
what operating models costs, on one ``python -m service`` on 127.0.0.1.

1. shadow traffic (``bench/shadow.py``): the primary's latency with the shadow off, at 10% and at 100%;
2. reloading the model list (``bench/reload.py``): models-file swap to the first answer from the new
   version, under load, and the requests that failed meanwhile (none should);
3. priorities (``bench/priorities.py``): interactive latency alone, under a saturating async-job load,
   and under the same load sent as interactive requests; jobs completed.

Every part is bounded by its rounds and seconds; a part that would start past ``--budget`` is
skipped and says so. ``--docs`` adds the figures to docs/benchmarks.json (key ``ops``) and
re-renders docs/benchmarks.md from it, leaving the throughput figures there as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import priorities, reload, shadow
from bench.opsreport import priorities_table, reload_table, shadow_table

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("shadow", "reload", "priorities")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + args.budget
    env = dict(kv.split("=", 1) for kv in args.env)
    cpuinfo = (_read("/proc/cpuinfo") or "").splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), None)
    out: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m bench ops " + " ".join(args.argv),
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "cgroup_cpu_max": _read("/sys/fs/cgroup/cpu.max"),
            "loadavg_at_start": _read("/proc/loadavg"),
        },
        "service_env": env,
        "skipped": {},
    }
    for part in args.parts:
        if time.monotonic() > deadline:
            out["skipped"][part] = f"past the {args.budget:g} s budget"
            print(f"== {part}: skipped, past the budget", flush=True)
            continue
        print(f"== {part}", flush=True)
        if part == "shadow":
            out["shadow"] = shadow.measure(args.model, args.shadow_levels, args.seconds, args.rounds, env)
            lines = shadow_table(out["shadow"])
        elif part == "reload":
            out["reload"] = [reload.measure(model, args.reloads, env) for model in args.reload_models]
            lines = reload_table(out["reload"])
        else:
            out["priorities"] = priorities.measure(args.model, args.seconds, args.rounds, env)
            lines = priorities_table(out["priorities"])
        print("\n".join(lines), flush=True)
    out["machine"]["loadavg_at_end"] = _read("/proc/loadavg")
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    return out


def add_to_docs(ops: dict[str, Any], root: Path) -> list[Path]:
    """The ops figures into the committed report, whose throughput figures stay as they were measured."""
    from bench.report import write_docs

    js = root / "docs" / "benchmarks.json"
    if not js.exists():
        raise SystemExit(f"{js} is missing: run `make bench` (the throughput levels write it) first")
    report = json.loads(js.read_text())
    report["ops"] = ops
    return write_docs(report, root / "docs")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench ops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of: " + ", ".join(PARTS))
    p.add_argument("--model", choices=["resnet18", "digits"], default="resnet18", help="shadow and priorities")
    p.add_argument("--reload-models", default="digits,resnet18")
    p.add_argument("--shadow-levels", default="1,4", help="closed-loop concurrency of the primary requests")
    p.add_argument("--seconds", type=float, default=8.0, help="length of one round (shadow, priorities)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per configuration, interleaved")
    p.add_argument("--reloads", type=int, default=4, help="reloads per model")
    p.add_argument("--env", action="append", default=[], metavar="ML_API_X=V", help="extra service settings")
    p.add_argument("--budget", type=float, default=540.0, help="seconds; parts that would start past it are skipped")
    p.add_argument("--quick", action="store_true", help="digits, 2 s rounds, 1 round, 2 reloads, concurrency 1")
    p.add_argument("--out", default=".bench/results-ops.json")
    p.add_argument("--docs", action="store_true", help="add the figures to docs/benchmarks.{json,md}")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.model, args.reload_models, args.seconds, args.rounds, args.reloads = "digits", "digits", 2.0, 1, 2
        args.shadow_levels = "1"
    args.parts = [v for v in args.parts.split(",") if v]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts: {', '.join(sorted(unknown))}")
    args.shadow_levels = [int(v) for v in args.shadow_levels.split(",")]
    args.reload_models = args.reload_models.split(",")
    # SIGTERM (timeout, Ctrl-C in make) unwinds through the finally blocks that stop the service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ops = run(args)
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(ops, indent=1))
    print(f"wrote {out} in {ops['elapsed_s']} s")
    if args.docs:
        for path in add_to_docs(ops, ROOT):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

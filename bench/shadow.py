"""What shadow traffic costs the primary requests: latency with the shadow off, at 10%, and at 100%.

    python -m bench.shadow                       # resnet18 (random weights, 224 px), concurrency 1 and 4
    python -m bench.shadow --levels 1 --seconds 5 --rounds 2 --model digits

One server, two versions of the same model (the second as the shadow of the first). The shadow
rate is changed through the models file between rounds (a reload that loads nothing: both versions
stay loaded and warm), so every configuration runs in the same process, and the configurations are
interleaved round by round so a burst of foreign load on the shared machine hits them alike.
Reported per configuration and concurrency: the median over rounds of the primary requests' p50,
p95 and p99 and their ratio to the shadow off, their throughput, the shadow copies' outcomes, and
the CPU busy on the machine. Between rounds the copies still running are waited for.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.images import make_jpeg
from bench.opsload import RESNET18, ClosedLoop, Service, percentiles, run_for, service, upload
from bench.opsreport import shadow_table

RATES = (0.0, 0.1, 1.0)


def models(model: str, rate: float) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": model, **(RESNET18 if model == "resnet18" else {"source": "bundled"})}
    return {
        "models": [{**spec, "version": "1"}, {**spec, "version": "2"}],
        "default_model": model,
        "shadow": {model: {"version": "2", "rate": rate}},
    }


def shadow_rate(base: str) -> float | None:
    listed = httpx.get(f"{base}/api/v1/models", timeout=10).json()["models"]
    return next((m["shadow_rate"] for m in listed if m["version"] == "2"), None)


def shadow_loaded(base: str) -> bool:
    listed = httpx.get(f"{base}/api/v1/models", timeout=10).json()["models"]
    return any(m["version"] == "2" and m["loaded"] for m in listed)


def copies(svc: Service) -> dict[str, float]:
    return {o: svc.value("ml_api_shadow_requests_total", outcome=o) for o in ("success", "dropped", "failed")}


def settle(svc: Service) -> None:
    """Wait for the copies mirrored after the last answers: they run after the response is sent, so the
    next round would otherwise start with the previous round's shadow work still queued."""
    svc.wait(lambda: svc.value("ml_api_queue_depth") == 0, "the queues to empty")
    last, deadline = copies(svc), time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = copies(svc)
        if now == last:
            return
        last = now
    raise SystemExit("the shadow copies did not settle within 60 s")


def measure(
    model: str, levels: list[int], seconds: float, rounds: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    image = make_jpeg()
    out: dict[str, Any] = {"model": model, "seconds": seconds, "rounds": rounds, "rates": list(RATES), "levels": []}
    out["service_env"] = env or {}
    with tempfile.TemporaryDirectory() as work, service(Path(work), models(model, 0.0), env) as (svc, mount):
        svc.wait(lambda: shadow_loaded(svc.base), "the shadow version to load")
        for level in levels:
            # Warm the connection pool and the allocator at this concurrency before measuring.
            run_for(ClosedLoop(svc.base, upload(image), clients=level), 2.0)
            per_rate: dict[float, list[dict[str, float]]] = {r: [] for r in RATES}
            for _ in range(rounds):
                for rate in RATES:
                    mount.write(models(model, rate))
                    svc.wait(lambda r=rate: shadow_rate(svc.base) == r, "the new shadow rate")
                    settle(svc)
                    copies0 = copies(svc)
                    samples, busy = run_for(ClosedLoop(svc.base, upload(image), clients=level), seconds)
                    settle(svc)
                    ok = [s.seconds for s in samples if s.status == 200]
                    done = {o: v - copies0[o] for o, v in copies(svc).items()}
                    per_rate[rate].append(
                        {
                            **{k: v * 1000 for k, v in percentiles(ok).items()},
                            "rps": len(ok) / seconds,
                            "errors": len(samples) - len(ok),
                            "shadow_success": done["success"],
                            "shadow_dropped": done["dropped"],
                            "shadow_failed": done["failed"],
                            "cpu_busy": busy,
                        }
                    )
            out["levels"].append(
                {"concurrency": level, "configs": [{"rate": r, "rounds": v} for r, v in per_rate.items()]}
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "digits"], default="resnet18")
    parser.add_argument("--levels", default="1,4", help="closed-loop concurrency levels")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], metavar="ML_API_X=V", help="extra service settings")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    result = measure(args.model, [int(v) for v in args.levels.split(",")], args.seconds, args.rounds, env)
    print(f"model {args.model}, {args.rounds} rounds of {args.seconds:g} s per configuration (medians over rounds)")
    print("\n".join(shadow_table(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

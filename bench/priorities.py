"""Interactive latency under a saturating async-job load: what the two priority classes buy.

    python -m bench.priorities                     # resnet18 (random weights, 224 px)
    python -m bench.priorities --model digits --seconds 5 --rounds 2

One server. Three scenarios, interleaved round by round:

- ``alone``: one closed-loop interactive client (POST /api/v1/predict/upload);
- ``jobs``: the same client while a submitter keeps the async-job queue full (POST
  /api/v1/predict/async, re-submitting as jobs finish; the job workers keep the model busy with
  background-priority images);
- ``interactive competition``: the same client while the same number of other clients as there are
  job workers send interactive requests instead: the load the jobs would be without priorities.

Reported per scenario: the median over rounds of the measured client's p50/p95/p99 and their ratio
to it running alone, and the jobs completed (they must keep completing: background work is never
starved, ``service/inference/batcher.py``).
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.images import make_jpeg
from bench.opsload import RESNET18, ClosedLoop, Service, percentiles, run_for, service, upload
from bench.opsreport import priorities_table

JOB_WORKERS = 4  # service/jobs/memory.py: the in-process backend's workers
BACKLOG = 64  # jobs kept queued while the scenario runs


class JobFlood:
    """Keeps about ``BACKLOG`` jobs waiting: submits whenever the queue depth drops below it."""

    def __init__(self, svc: Service, image: bytes) -> None:
        self.svc = svc
        self.body = {"image_base64": base64.b64encode(image).decode()}
        self._stop = threading.Event()
        self.submitted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.svc.base, timeout=60) as http:
            for _ in range(1_000_000):  # bounded; stopped long before
                if self._stop.is_set():
                    return
                depth = self.svc.value("ml_api_jobs_queue_depth")
                for _ in range(max(0, BACKLOG - int(depth))):
                    if http.post("/api/v1/predict/async", json=self.body).status_code == 202:
                        self.submitted += 1
                # Each look at the depth costs the service a /metrics render; a quarter second is far
                # shorter than the backlog takes to drain, so the job workers never run dry.
                self._stop.wait(0.25)

    def start(self) -> JobFlood:
        self._thread.start()
        # Saturated once a backlog builds up, or once the workers take jobs as fast as one submitter can
        # send them (a small model): either way the job workers are never idle from here on.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.svc.value("ml_api_jobs_queue_depth") >= BACKLOG / 2 or self.submitted >= 2 * BACKLOG:
                break
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


SCENARIOS = ("alone", "jobs", "interactive competition")


def measure(model: str, seconds: float, rounds: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    image = make_jpeg()
    spec: dict[str, Any] = {"name": model, "version": "1", **(RESNET18 if model == "resnet18" else {})}
    per: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
    env = {"ML_API_JOBS_MAX_QUEUE": str(BACKLOG * 4), **(env or {})}
    with (
        tempfile.TemporaryDirectory() as work,
        service(Path(work), {"models": [spec], "default_model": model}, env) as (svc, _mount),
    ):
        run_for(ClosedLoop(svc.base, upload(image)), 2.0)  # warm-up
        for _ in range(rounds):
            for scenario in SCENARIOS:
                flood = JobFlood(svc, image).start() if scenario == "jobs" else None
                rivals = (
                    ClosedLoop(svc.base, upload(image), clients=JOB_WORKERS).start()
                    if scenario == "interactive competition"
                    else None
                )
                completed0 = svc.value("ml_api_jobs_total", outcome="completed")
                samples, busy = run_for(ClosedLoop(svc.base, upload(image)), seconds)
                completed = svc.value("ml_api_jobs_total", outcome="completed") - completed0
                if flood is not None:
                    flood.stop()
                if rivals is not None:
                    rivals.stop()
                svc.wait(lambda: svc.value("ml_api_jobs_queue_depth") == 0, "the job queue to drain", timeout=600)
                ok = [s.seconds for s in samples if s.status == 200]
                per[scenario].append(
                    {
                        **{k: v * 1000 for k, v in percentiles(ok).items()},
                        "rps": len(ok) / seconds,
                        "errors": len(samples) - len(ok) + len(rivals.errors if rivals else []),
                        "jobs_completed": completed,
                        "jobs_per_s": completed / seconds,
                        "rival_rps": len([s for s in rivals.samples if s.status == 200]) / seconds if rivals else 0,
                        "cpu_busy": busy,
                    }
                )
        failed_jobs = svc.value("ml_api_jobs_total", outcome="failed")
    return {
        "model": model,
        "seconds": seconds,
        "rounds": rounds,
        "backlog": BACKLOG,
        "job_workers": JOB_WORKERS,
        "jobs_failed": failed_jobs,
        "service_env": env,
        "scenarios": [{"scenario": s, "rounds": r} for s, r in per.items()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "digits"], default="resnet18")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], metavar="ML_API_X=V", help="extra service settings")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = measure(args.model, args.seconds, args.rounds, dict(kv.split("=", 1) for kv in args.env))
    print(f"model {args.model}, {args.rounds} rounds of {args.seconds:g} s per scenario (medians over rounds)")
    print("\n".join(priorities_table(result)))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

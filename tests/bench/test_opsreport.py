"""The arithmetic and rendering of the model-operations bench (bench/opsreport.py, the report's section)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.opsreport import combine, priorities_rows, section, shadow_rows
from bench.report import render

ROOT = Path(__file__).resolve().parent.parent.parent


def lat(p50: float, p99: float, **extra: float) -> dict[str, float]:
    return {"p50": p50, "p95": p99, "p99": p99, "rps": 10.0, "errors": 0, "cpu_busy": 1.0, **extra}


def shadow_result() -> dict:
    return {
        "model": "digits", "seconds": 2.0, "rounds": 3, "rates": [0.0, 0.1, 1.0],
        "levels": [{"concurrency": 4, "configs": [
            {"rate": 0.0, "rounds": [lat(10.0, 20.0), lat(12.0, 30.0), lat(11.0, 25.0)]},
            {"rate": 0.1, "rounds": [lat(11.0, 26.0, shadow_success=5), lat(99.0, 99.0, shadow_success=4),
                                     lat(11.0, 24.0, shadow_success=6)]},
            {"rate": 1.0, "rounds": [lat(22.0, 50.0, shadow_dropped=1)] * 3},
        ]}],
    }  # fmt: skip


def priorities_result() -> dict:
    return {
        "model": "digits", "seconds": 2.0, "rounds": 1, "backlog": 64, "job_workers": 4, "jobs_failed": 0,
        "scenarios": [
            {"scenario": "alone", "rounds": [lat(5.0, 10.0, jobs_completed=0, jobs_per_s=0, rival_rps=0)]},
            {"scenario": "jobs", "rounds": [lat(10.0, 30.0, jobs_completed=40, jobs_per_s=20, rival_rps=0)]},
            {"scenario": "interactive competition",
             "rounds": [lat(20.0, 40.0, jobs_completed=0, jobs_per_s=0, rival_rps=50)]},
        ],
    }  # fmt: skip


def reload_result() -> list[dict]:
    return [
        {
            "model": "digits", "repeats": 2, "swap_to_first_new_answer_s": {"median": 1.05, "max": 1.1},
            "load_and_warm_s": {"median": 0.02, "max": 0.03}, "unload_s": None, "requests": 900, "failed": 0,
            "latency_ms": {"p50": 12.0, "p95": 30.0, "p99": 44.0},
        }
    ]  # fmt: skip


def test_combine_sums_counts_and_takes_the_median_of_the_rest() -> None:
    rounds = [lat(10.0, 20.0, errors=1, shadow_success=3), lat(30.0, 90.0, errors=2, shadow_success=4),
              lat(float("nan"), float("nan"), errors=0, shadow_success=0)]  # fmt: skip
    out = combine(rounds)
    assert out["errors"] == 3 and out["shadow_success"] == 7
    assert out["p50"] == 20.0  # the round without samples (NaN) does not count
    assert out["p99"] == 55.0


def test_shadow_rows_compare_each_rate_with_the_shadow_off_at_the_same_concurrency() -> None:
    rows = {r["rate"]: r for r in shadow_rows(shadow_result())}
    assert rows[0.0]["p50_ratio"] == 1.0
    # the burst round (99 ms) is outvoted by the other two
    assert rows[0.1]["p50"] == 11.0 and math.isclose(rows[0.1]["p50_ratio"], 1.0)
    assert math.isclose(rows[0.1]["p99_ratio"], 26.0 / 25.0)
    assert rows[0.1]["shadow_success"] == 15
    assert math.isclose(rows[1.0]["p50_ratio"], 2.0)
    assert all(math.isclose(r["off_p50_spread"], 1.2) for r in rows.values())


def test_priorities_rows_compare_with_the_client_alone() -> None:
    rows = {r["scenario"]: r for r in priorities_rows(priorities_result())}
    assert rows["jobs"]["p50_ratio"] == 2.0 and rows["jobs"]["p99_ratio"] == 3.0
    assert rows["interactive competition"]["p50_ratio"] == 4.0
    assert rows["jobs"]["jobs_completed"] == 40


def test_section_renders_every_part_and_what_was_skipped() -> None:
    ops = {
        "generated_at": "2026-01-01T00:00:00Z", "command": "python -m bench ops --quick", "elapsed_s": 60.0,
        "machine": {"cores": 2, "loadavg_at_start": "0.52 0.55 1.09 2/143 4872", "loadavg_at_end": "0.2"},
        "service_env": {"ML_API_MAX_BATCH_SIZE": "1"},
        "shadow": shadow_result(), "reload": reload_result(), "priorities": priorities_result(),
        "skipped": {"something": "past the 1 s budget"},
    }  # fmt: skip
    text = "\n".join(section(ops))
    assert "load average 0.52 0.55 1.09 at the start" in text
    assert "Service settings added to the defaults: `ML_API_MAX_BATCH_SIZE=1`" in text
    assert "### Shadow traffic" in text and "### Reloading the model list" in text
    assert "### Priorities under an async-job load" in text
    assert "| 4 | 10% | 11.0 | 26.0 | 26.0 | 1.00x | 1.04x |" in text
    assert "c=4 1.20x" in text  # the noise the ratios are judged by
    assert "| digits | 2 | 1.05 / 1.10 | 0.02 | - | 900 | 0 | 12.0 / 44.0 |" in text
    assert "| jobs | 10.0 | 30.0 | 30.0 | 2.00x | 3.00x |" in text
    assert "- something: skipped (past the 1 s budget)" in text


def test_the_report_renders_the_ops_section_only_when_measured() -> None:
    report = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    report.pop("ops", None)
    plain = render(report)
    assert "## Model operations" not in plain
    report["ops"] = {"generated_at": "x", "machine": {}, "reload": reload_result()}
    with_ops = render(report)
    assert "## Model operations" in with_ops and "### Shadow traffic" not in with_ops
    # the measured sections come before the hand-written notes, which close the page
    assert with_ops.index("## Model operations") < with_ops.index("## How to run")

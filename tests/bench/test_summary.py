"""Headline figures and targets from measured levels: the arithmetic of bench/summary.py and the report."""

from __future__ import annotations

from bench.limit_runner import Layout, merge
from bench.report import render
from bench.summary import summarise, targets, verdict


def row(conc: int, body: str, ips: float, *, p50: float = 100.0, p99: float = 150.0, probe: float = 10.0,
        cpu: float = 42.0) -> dict:  # fmt: skip
    return {
        "concurrency": conc, "body": body, "images_per_s": ips, "p50_ms": p50, "p95_ms": p99, "p99_ms": p99,
        "max_ms": p99, "errors": 0, "mean_batch": 1.0, "probe_p99_ms": probe, "probe_max_ms": probe,
        "server_cpu": 1.8, "server_cpu_ms_per_image": cpu, "loadgen_cpu": 0.01, "other_cpu": 0.0, "loadgen": "wrk",
        "requests": 100,
    }  # fmt: skip


def server(kind: str, layout: str, backend: str, rows: list[dict], top1: int = 3, peak: float = 1000.0) -> dict:
    return {
        "kind": kind, "layout": layout, "backend": backend, "label": kind, "levels": rows,
        "answer": {"top5": [{"class_id": top1, "label": "x", "confidence": 0.5}]},
        "memory": {"processes": 2, "peak_rss_mib": peak, "rss_mib": peak, "pss_mib": peak * 0.8},
    }  # fmt: skip


def limit(ips: float, layout: str = "2x1", cpu: float = 40.0, top1: int = 3) -> dict:
    return {"images_per_s": ips, "layout": layout, "best_batch_size": 8, "cpu_ms_per_image": cpu,
            "top5": [{"class_id": top1}], "variants": []}  # fmt: skip


def report() -> dict:
    levels = [1, 16, 64]
    service_rows = [
        row(1, "raw", 20.0), row(16, "raw", 38.0, p99=190.0), row(64, "raw", 37.0, probe=60.0),
        row(1, "multipart", 20.0), row(16, "multipart", 36.0), row(64, "multipart", 35.0),
        {"concurrency": 1, "body": "v2-http", "skipped": "the service answers 404 on /v2"},
    ]  # fmt: skip
    naive_rows = [
        row(1, "raw", 25.0), row(16, "raw", 30.0), row(64, "raw", 30.0),
        row(1, "multipart", 22.0), row(16, "multipart", 28.0), row(64, "multipart", 28.0),
    ]  # fmt: skip
    resnet = {
        "slot": "resnet18",
        "limits": {"torch": limit(40.0), "onnxruntime": limit(70.0)},
        "servers": {
            "service": server("service", "auto", "torch", service_rows),
            "service-1x2": server("service", "1x2", "torch", [row(16, "raw", 39.0)], peak=1000.0),
            "service-2x1": server("service", "2x1", "torch", [row(16, "raw", 41.0)], peak=1400.0),
            "service-onnxruntime": server("service", "auto", "onnxruntime", [row(16, "raw", 60.0)]),
            "naive": server("naive", "1 process", "torch", naive_rows),
        },
    }
    digits = {
        "slot": "digits",
        "limits": {"torch": limit(1000.0, cpu=1.0, top1=8)},
        "servers": {"service": server("service", "auto", "torch", [row(16, "raw", 600.0, cpu=1.4)], top1=8)},
    }
    resnet["summary"] = summarise("resnet18", resnet, levels)
    digits["summary"] = summarise("digits", digits, levels)
    return {"models": {"resnet18": resnet, "digits": digits}, "missing_settings": []}


def by_key(rows: list[dict], model: str) -> dict[str, dict]:
    return {t["key"]: t for t in rows if t["model"] == model}


def test_verdicts_and_margins() -> None:
    assert verdict(0.95, "served_over_limit_raw")["met"] is True
    assert verdict(0.9, "served_over_limit_raw") == {
        "goal": 0.95, "direction": ">=", "value": 0.9, "met": False, "margin": -0.053,
    }  # fmt: skip
    assert verdict(50.0, "probe_max_ms_c64")["met"] is False  # strictly below 50 ms
    assert verdict(None, "p99_over_p50_c16")["met"] is None


def test_targets_of_a_run() -> None:
    t = by_key(targets(report()), "resnet18")
    assert t["served_over_limit_raw"]["value"] == 0.95 and t["served_over_limit_raw"]["met"]  # 38 / 40
    assert "best layout 2x1: 102%" in t["served_over_limit_raw"]["figure"]
    assert t["served_over_limit_multipart"]["value"] == 0.9 and t["served_over_limit_multipart"]["met"]
    assert t["served_over_limit_base64"]["met"] is None  # not measured
    assert t["served_over_naive"]["value"] == 0.8 and "c=1, raw" in t["served_over_naive"]["figure"]
    assert t["p99_over_p50_c16"]["value"] == 1.9 and t["p99_over_p50_c16"]["met"]
    assert t["probe_max_ms_c64"]["value"] == 60.0 and not t["probe_max_ms_c64"]["met"]
    assert t["best_backend_over_torch_limit"]["value"] == 1.5 and t["best_backend_over_torch_limit"]["met"]
    assert t["memory_two_over_one"]["value"] == 1.4 and not t["memory_two_over_one"]["met"]
    d = by_key(targets(report()), "digits")
    assert d["digits_over_limit"]["value"] == 0.6 and d["digits_over_limit"]["met"]
    assert d["digits_request_path_cpu_ms"]["value"] == 0.4 and d["digits_request_path_cpu_ms"]["met"]


def test_a_backend_with_another_top1_does_not_count() -> None:
    r = report()
    r["models"]["resnet18"]["servers"]["service-onnxruntime"]["answer"]["top5"][0]["class_id"] = 7
    r["models"]["resnet18"]["summary"] = summarise("resnet18", r["models"]["resnet18"], [1, 16, 64])
    t = by_key(targets(r), "resnet18")["best_backend_over_torch_limit"]
    assert t["met"] is None and "top-1 differs" in t["note"]


def test_memory_is_not_judged_without_the_instances_setting() -> None:
    r = report()
    r["missing_settings"] = ["ML_API_MODEL_INSTANCES"]
    t = by_key(targets(r), "resnet18")["memory_two_over_one"]
    assert t["met"] is None and "ML_API_MODEL_INSTANCES" in t["note"]


def test_the_report_renders_the_targets_and_skips() -> None:
    r = report()
    r |= {
        "generated_at": "now", "command": "python -m bench", "image": {"bytes": 1},
        "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 1, "cgroup_cpu_max": None, "kernel": "k", "python": "3",
                    "versions": {}, "wrk": "wrk", "loadavg_at_start": "0"},
        "config": {"levels": [1, 16, 64], "load_generator": "wrk", "seconds_per_level": 8, "warmup_s": 1,
                   "probe_interval_s": 0.1, "device": "cpu", "precision": "fp32", "service_env": []},
    }  # fmt: skip
    md = render(r)
    assert "| resnet18 | served at saturation >= 0.95 of the best-layout limit (raw) |" in md
    assert "**missed**: 1.20x the goal" in md  # the probe, 60 ms against < 50 ms
    assert "best backend: served at saturation = 60.0 images/s = 1.50x today's torch-eager limit" in md
    assert "skipped: the service answers 404 on /v2" in md


def test_a_layout_of_processes_adds_their_throughput() -> None:
    part = {"points": [{"batch_size": 8, "images": 100, "images_per_s": 20.0, "cpu_ms_per_image": 40.0,
                        "decode_ms_per_image": 4.0}], "load_s": 1.0}  # fmt: skip
    other = {"points": [{"batch_size": 8, "images": 300, "images_per_s": 30.0, "cpu_ms_per_image": 44.0,
                         "decode_ms_per_image": 4.0}], "load_s": 3.0}  # fmt: skip
    m = merge([part, other], Layout.parse("2x1"))
    assert m["images_per_s"] == 50.0 and m["cpu_ms_per_image"] == 43.0 and m["load_s"] == 3.0
    assert (m["layout"], m["instances"], m["threads"]) == ("2x1", 2, 1)

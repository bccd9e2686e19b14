"""Every shipped PromQL expression, evaluated by a real Prometheus scraping the real service.

A `python -m service` process serves on a free loopback port; /usr/bin/prometheus scrapes it every
second (exemplar storage on, the chart's alert rules loaded) with two jobs:

- `ml-api`: a plain scrape, labels job/instance only (what a local Prometheus sees);
- `ml-api-k8s-sim`: the same target with the `namespace`/`pod`/`service` target labels a
  ServiceMonitor's Kubernetes service discovery adds. prometheus-adapter needs these to map series
  to pods, so its rule is checked against this job.

The service serves two versions of the digits model from a models file (ML_API_MODELS_FILE), the
second a shadow of the first at rate 1.0, and logs every prediction (ML_API_PREDICTION_LOG_RATE=1):
so the reload, shadow and class-distribution series have data like every other.

Traffic goes through every endpoint class, errors included, and through every inference protocol
(`/api/v1`, `/v2` REST, gRPC ModelInfer on the service's own gRPC port). Then each dashboard query (template
variables replaced by their "All" value `.*`, and again with the release pinned to the plain job),
each recording and alerting rule, and the adapter rule are evaluated through /api/v1/query. Each
must parse; each that reads only the service's own metrics must return data; each that reads a
Kubernetes-only series (listed in promql_sources.KUBERNETES_ONLY_METRICS) must return nothing here.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml

from service.grpc.proto import inference_v2_pb2 as pb
from service.grpc.proto.inference_v2_pb2_grpc import GRPCInferenceServiceStub
from service.oip.tensors import serialize_bytes
from service.training.digits_data import digit_png, load_split
from tests.observability.promql_sources import (
    ALERTS_FILE,
    KUBERNETES_ONLY_METRICS,
    ROOT,
    Expression,
    adapter_expressions,
    dashboard_expressions,
    load_generator,
    metric_names,
    rule_expressions,
    substitute,
)

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus binary not on PATH (apt-get install prometheus)"
    ),
]

PLAIN_JOB = "ml-api"
SHADOW_VERSION = "2"  # the same bundled weights: every copy agrees
SIM_JOB = "ml-api-k8s-sim"
SIM_NAMESPACE = "ml-api-test"
SIM_POD = "ml-api-test-7d9f-abcde"
ROUNDS = 3  # traffic rounds, one second apart, so rate() windows hold several increasing samples
START_TIMEOUT_S = 120.0
SCRAPE_TIMEOUT_S = 60.0

# Substitutions for the dashboard template variables: Grafana's "All" (`.*`), and the release pinned
# to the plain scrape job, which proves the queries work where namespace/pod labels are absent.
VARIABLE_SETS = {
    "all": {"namespace": ".*", "release": ".*", "model": ".*", "protocol": ".*", "datasource": "prometheus"},
    "plain-release": {
        "namespace": ".*",
        "release": PLAIN_JOB,
        "model": ".*",
        "protocol": ".*",
        "datasource": "prometheus",
    },
}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Traffic:
    """What the test sent, to check Prometheus saw exactly that."""

    statuses: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (method, route, status) -> n
    protocols: dict[tuple[str, str], int] = field(default_factory=dict)  # (protocol, outcome) -> n

    def inference(self, protocol: str, outcome: str) -> None:
        self.protocols[(protocol, outcome)] = self.protocols.get((protocol, outcome), 0) + 1

    def record(self, method: str, route: str, response: httpx.Response, expected: int) -> httpx.Response:
        assert response.status_code == expected, (
            f"{method} {route}: expected {expected}, got {response.status_code}: {response.text[:300]}"
        )
        key = (method, route, response.status_code)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        return response


@dataclass
class Stack:
    service_url: str
    prometheus_url: str
    traffic: Traffic
    service_metric_names: set[str]
    traffic_started: float
    log_dir: Path

    # Queries run at one fixed instant at which the data was confirmed scraped: on a loaded machine a
    # later scrape can time out, and Prometheus then marks the series stale for "now".
    eval_time: float | None = None

    def query(self, expr: str, *, now: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = {"query": expr}
        if self.eval_time is not None and not now:
            params["time"] = self.eval_time
        response = httpx.get(f"{self.prometheus_url}/api/v1/query", params=params, timeout=30)
        body: dict[str, Any] = response.json()
        return body


def _v2_infer(png: bytes) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(png).decode()]}]}


def _grpc_infer(stub: GRPCInferenceServiceStub, png: bytes, model: str = "digits") -> grpc.StatusCode:
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[serialize_bytes([png])])
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    try:
        stub.ModelInfer(request, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _drive_traffic(client: httpx.Client, stub: GRPCInferenceServiceStub, pngs: list[bytes]) -> Traffic:
    traffic = Traffic()
    b64 = [base64.b64encode(png).decode() for png in pngs]
    for round_no in range(ROUNDS):
        one = {"image_base64": b64[round_no]}
        many = {"images": [{"image_base64": b} for b in b64[:4]]}
        # The same image over each protocol, and one request each that the client got wrong.
        traffic.record(
            "POST", "/v2/models/{name}/infer", client.post("/v2/models/digits/infer", json=_v2_infer(pngs[0])), 200
        )
        traffic.inference("v2-rest", "success")
        traffic.record(
            "POST",
            "/v2/models/{name}/infer",
            client.post(
                "/v2/models/digits/infer", json={"inputs": [{**_v2_infer(pngs[0])["inputs"][0], "name": "px"}]}
            ),
            400,
        )
        traffic.inference("v2-rest", "invalid")
        assert _grpc_infer(stub, pngs[round_no]) == grpc.StatusCode.OK
        traffic.inference("v2-grpc", "success")
        assert _grpc_infer(stub, pngs[round_no], model="no-such-model") == grpc.StatusCode.NOT_FOUND
        traffic.inference("v2-grpc", "invalid")
        traffic.record("POST", "/api/v1/predict", client.post("/api/v1/predict", json=one), 200)
        traffic.record(
            "POST",
            "/api/v1/predict/upload",
            client.post("/api/v1/predict/upload", files={"file": ("digit.png", pngs[round_no], "image/png")}),
            200,
        )
        traffic.record(
            "POST",
            "/api/v1/predict/upload",
            client.post("/api/v1/predict/upload", content=pngs[round_no], headers={"Content-Type": "image/png"}),
            200,
        )
        batch = traffic.record("POST", "/api/v1/predict/batch", client.post("/api/v1/predict/batch", json=many), 200)
        assert len(batch.json()["results"]) == 4
        # One undecodable item in a batch: a per-item error, outcome invalid_image in the metrics.
        mixed = {"images": [{"image_base64": b64[0]}, {"image_base64": base64.b64encode(b"not an image").decode()}]}
        mixed_body = traffic.record(
            "POST", "/api/v1/predict/batch", client.post("/api/v1/predict/batch", json=mixed), 200
        ).json()
        assert mixed_body["results"][1]["error"] == "INVALID_IMAGE"
        with client.stream("POST", "/api/v1/predict/stream", json=many) as stream:
            traffic.record("POST", "/api/v1/predict/stream", stream, 200)
            events = [line for line in stream.iter_lines() if line.startswith("data:")]
        assert events[-1] == "data: [DONE]" and len(events) == 5
        accepted = traffic.record(
            "POST", "/api/v1/predict/async", client.post("/api/v1/predict/async", json=one), 202
        ).json()
        job_url = accepted["status_url"]

        def job_done(url: str = job_url) -> bool:
            state = traffic.record("GET", "/api/v1/jobs/{job_id}", client.get(url), 200).json()
            return state["status"] in ("completed", "failed")

        _wait(job_done, 30, "the async job to finish")
        with client.stream("GET", f"{job_url}/events") as stream:
            traffic.record("GET", "/api/v1/jobs/{job_id}/events", stream, 200)
            assert any('"completed"' in line for line in stream.iter_lines() if line.startswith("data:"))
        traffic.record("POST", "/api/v1/embed", client.post("/api/v1/embed", json=one), 200)
        traffic.record("GET", "/api/v1/models", client.get("/api/v1/models"), 200)
        traffic.record("GET", "/health", client.get("/health"), 200)
        # Errors: unknown path, unknown job, validation error, undecodable image.
        traffic.record("GET", "/no/such/path", client.get("/no/such/path"), 404)
        traffic.record("GET", "/api/v1/jobs/{job_id}", client.get(f"/api/v1/jobs/{uuid.uuid4().hex}"), 404)
        traffic.record("POST", "/api/v1/predict", client.post("/api/v1/predict", json={}), 422)
        bad = {"image_base64": base64.b64encode(b"definitely not a png").decode()}
        traffic.record("POST", "/api/v1/predict", client.post("/api/v1/predict", json=bad), 400)
        time.sleep(1.0)
    return traffic


def _metric_names_exposed(service_url: str) -> set[str]:
    text = httpx.get(f"{service_url}/metrics", timeout=10).text
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("live-prometheus")
    service_port, prometheus_port, grpc_port = _free_port(), _free_port(), _free_port()
    service_url = f"http://127.0.0.1:{service_port}"
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    models_file = work / "models.json"
    models_file.write_text(
        json.dumps(
            {
                "models": [{"name": "digits", "version": "1"}, {"name": "digits", "version": SHADOW_VERSION}],
                "shadow": {"digits": {"version": SHADOW_VERSION, "rate": 1.0}},
            }
        )
    )
    env = {
        **os.environ,
        "ML_API_HOST": "127.0.0.1",
        "ML_API_PORT": str(service_port),
        "ML_API_GRPC_PORT": str(grpc_port),
        "ML_API_LOG_LEVEL": "WARNING",
        "ML_API_MODELS_FILE": str(models_file),
        "ML_API_SHADOW_MAX_INFLIGHT": "64",
        "ML_API_PREDICTION_LOG_RATE": "1.0",
    }
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    service_log = (work / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=service_log, stderr=subprocess.STDOUT
    )
    prometheus: subprocess.Popen[bytes] | None = None
    try:

        def service_ready() -> bool:
            if service.poll() is not None:  # fail fast, with the reason, instead of waiting out the timeout
                tail = (work / "service.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"the service exited with {service.returncode} before ready:\n{tail}")
            return httpx.get(f"{service_url}/health/ready", timeout=2).status_code == 200

        _wait(service_ready, START_TIMEOUT_S, f"the service to become ready (log: {work / 'service.log'})")

        def shadow_loaded() -> bool:  # read from /metrics: it is not counted as traffic
            text = httpx.get(f"{service_url}/metrics", timeout=5).text
            return f'ml_api_model_loaded{{model="digits",version="{SHADOW_VERSION}"}} 1.0' in text

        _wait(shadow_loaded, START_TIMEOUT_S, "the shadow version to load (after readiness)")
        target = f"127.0.0.1:{service_port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS_FILE)],
            "scrape_configs": [
                {"job_name": PLAIN_JOB, "static_configs": [{"targets": [target]}]},
                {
                    "job_name": SIM_JOB,
                    "static_configs": [
                        {
                            "targets": [target],
                            "labels": {"namespace": SIM_NAMESPACE, "pod": SIM_POD, "service": "ml-api"},
                        }
                    ],
                },
            ],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus_log = (work / "prometheus.log").open("wb")
        prometheus = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            cwd=work,
            stdout=prometheus_log,
            stderr=subprocess.STDOUT,
        )
        _wait(
            lambda: prometheus.poll() is None and httpx.get(f"{prometheus_url}/-/ready", timeout=2).status_code == 200,
            SCRAPE_TIMEOUT_S,
            f"Prometheus to become ready (log: {work / 'prometheus.log'})",
        )
        # Both jobs up before traffic, so the first requests are scraped as increases, not as a
        # counter's first sample.
        _wait(
            lambda: (
                len(httpx.get(f"{prometheus_url}/api/v1/query", params={"query": "up == 1"}).json()["data"]["result"])
                == 2
            ),
            SCRAPE_TIMEOUT_S,
            "both scrape jobs up",
        )
        started = time.time()
        pngs = [digit_png(image) for image in load_split()[2][:8]]
        with (
            httpx.Client(base_url=service_url, timeout=30) as client,
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
        ):
            traffic = _drive_traffic(client, GRPCInferenceServiceStub(channel), pngs)
        embeds = traffic.statuses[("POST", "/api/v1/embed", 200)]

        def scraped_everything() -> float | None:
            # Both jobs hold the final count: returns that instant (Prometheus' clock).
            query = f'sum by (job) (http_requests_total{{handler="/api/v1/embed"}}) == {embeds}'
            result = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}).json()["data"]["result"]
            return float(result[0]["value"][0]) if len(result) == 2 else None

        eval_time = _wait(scraped_everything, SCRAPE_TIMEOUT_S, "Prometheus to scrape the last round of traffic")
        yield Stack(
            service_url=service_url,
            prometheus_url=prometheus_url,
            traffic=traffic,
            service_metric_names=_metric_names_exposed(service_url),
            traffic_started=started,
            log_dir=work,
            eval_time=eval_time,
        )
    finally:
        if prometheus is not None:
            _stop(prometheus)
        _stop(service)
        service_log.close()


@dataclass
class Evaluation:
    expression: Expression
    variables: str  # name of the substitution set, or "" for rules/adapter
    promql: str
    status: str
    error: str
    series: int
    finite: int
    expected_empty: bool


def _evaluate(stack: Stack, expression: Expression, promql: str, variables: str, recorded: set[str]) -> Evaluation:
    names = metric_names(promql)
    unknown = names - stack.service_metric_names - recorded - KUBERNETES_ONLY_METRICS
    unknown -= {"up"}
    assert not unknown, (
        f"{expression.source}: reads {sorted(unknown)}, which the service does not expose and which is not a "
        f"listed Kubernetes-only series: {promql}"
    )
    body = stack.query(promql)
    result = body.get("data", {}).get("result", []) if body.get("status") == "success" else []
    values: list[str] = []
    for sample in result:
        values.append(sample["value"][1])
    return Evaluation(
        expression=expression,
        variables=variables,
        promql=promql,
        status=body.get("status", "?"),
        error=body.get("error", ""),
        series=len(result),
        finite=sum(1 for v in values if math.isfinite(float(v))),
        expected_empty=bool(names & KUBERNETES_ONLY_METRICS),
    )


def _recorded_names() -> set[str]:
    return {e.source.removeprefix("record ") for e in rule_expressions() if e.kind == "record"}


@pytest.fixture(scope="module")
def evaluations(stack: Stack, pytestconfig: pytest.Config) -> list[Evaluation]:
    recorded = _recorded_names()
    # Recording rules run every second here; wait (bounded) until each has produced a sample, so
    # alert expressions reading them are evaluated over real data. A rule that never produces one
    # is reported by the tests below, by name, rather than here as a timeout.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        results = [stack.query(name, now=True)["data"]["result"] for name in recorded]
        if all(results):
            stack.eval_time = max(float(r[0]["value"][0]) for r in results)
            break
        time.sleep(0.5)
    out: list[Evaluation] = []
    for expression in dashboard_expressions():
        for set_name, variables in VARIABLE_SETS.items():
            out.append(_evaluate(stack, expression, substitute(expression.expr, variables), set_name, recorded))
    for expression in rule_expressions():
        out.append(_evaluate(stack, expression, expression.expr, "", recorded))
    matchers = f'namespace="{SIM_NAMESPACE}",pod=~"{SIM_POD}"'
    for expression in adapter_expressions(matchers, "pod"):
        out.append(_evaluate(stack, expression, expression.expr, "", recorded))

    with_data = sum(1 for e in out if e.series)
    lines = [
        f"PromQL expressions evaluated against a live Prometheus: {len(out)} "
        f"({len(dashboard_expressions())} dashboard queries x {len(VARIABLE_SETS)} variable sets, "
        f"{len(rule_expressions())} rules, {len(adapter_expressions(matchers, 'pod'))} adapter queries); "
        f"returned data: {with_data}; expected empty (Kubernetes-only series): "
        f"{sum(1 for e in out if e.expected_empty and metric_names(e.promql) & KUBERNETES_ONLY_METRICS)}; "
        f"alerts not firing: "
        f"{sum(1 for e in out if e.expression.kind == 'alert' and not e.series)}"
    ]
    report = "\n".join(lines)
    (stack.log_dir / "promql-report.txt").write_text(
        report
        + "\n"
        + "\n".join(f"{e.series:3d} series {e.finite:3d} finite  {e.expression.source} [{e.variables}]" for e in out)
    )
    # Shown in every run, not only with -s: the counts are part of the check's result.
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print("\n" + report)
    else:
        print(report)
    return out


def test_prometheus_saw_every_endpoint_class_including_errors(stack: Stack) -> None:
    result = stack.query(f'sum by (handler, method, status) (http_requests_total{{job="{PLAIN_JOB}"}})')["data"][
        "result"
    ]
    seen = {
        (r["metric"]["handler"], r["metric"]["method"], r["metric"]["status"]): float(r["value"][1]) for r in result
    }
    expected: dict[tuple[str, str, str], float] = {}
    for (method, route, code), count in stack.traffic.statuses.items():
        # The instrumentator groups untemplated paths under "none" and status codes by class.
        handler = "none" if route == "/no/such/path" else route
        key = (handler, method, f"{code // 100}xx")
        expected[key] = expected.get(key, 0) + count
    for key, count in expected.items():
        assert seen.get(key) == count, f"{key}: Prometheus has {seen.get(key)}, the test sent {count}"
    outcomes = stack.query(f'sum by (outcome) (ml_api_predictions_total{{job="{PLAIN_JOB}"}})')["data"]["result"]
    by_outcome = {r["metric"]["outcome"]: float(r["value"][1]) for r in outcomes}
    assert by_outcome.get("success", 0) > 0
    assert by_outcome.get("invalid_image", 0) >= ROUNDS


def test_prometheus_counts_inference_under_each_protocol(stack: Stack) -> None:
    result = stack.query(
        f'sum by (protocol, outcome) (ml_api_protocol_requests_total{{job="{PLAIN_JOB}", protocol=~"v2-.*"}}) > 0'
    )["data"]["result"]
    seen = {(r["metric"]["protocol"], r["metric"]["outcome"]): float(r["value"][1]) for r in result}
    assert seen == {key: float(n) for key, n in stack.traffic.protocols.items()}
    assert seen == {
        ("v2-rest", "success"): ROUNDS,
        ("v2-rest", "invalid"): ROUNDS,
        ("v2-grpc", "success"): ROUNDS,
        ("v2-grpc", "invalid"): ROUNDS,
    }
    # gRPC calls are no HTTP requests: the only HTTP series they could land in has none.
    grpc_http = stack.query(f'http_requests_total{{job="{PLAIN_JOB}", handler=~".*GRPCInferenceService.*"}}')
    assert grpc_http["data"]["result"] == []


def test_every_expression_parses(evaluations: list[Evaluation]) -> None:
    failed = [
        f"{e.expression.source} [{e.variables}]: {e.error}\n  {e.promql}" for e in evaluations if e.status != "success"
    ]
    assert not failed, "expressions Prometheus rejected:\n" + "\n".join(failed)


def test_service_only_expressions_return_data(evaluations: list[Evaluation]) -> None:
    # Alert expressions are empty while not firing; their inputs are checked by the next tests.
    must_have_data = [e for e in evaluations if not e.expected_empty and e.expression.kind != "alert"]
    assert len(must_have_data) > 50
    empty = [f"{e.expression.source} [{e.variables}]\n  {e.promql}" for e in must_have_data if not e.series]
    assert not empty, "service-only expressions with no data:\n" + "\n".join(empty)


def test_dashboard_panels_show_numbers_not_nan(evaluations: list[Evaluation]) -> None:
    # A quantile or ratio over a window without increases is NaN: "data" Grafana would draw as a gap.
    panels = [e for e in evaluations if e.expression.kind == "panel" and not e.expected_empty]
    nan_only = [f"{e.expression.source} [{e.variables}]\n  {e.promql}" for e in panels if e.finite == 0]
    assert not nan_only, "panel queries returning only NaN:\n" + "\n".join(nan_only)


def test_kubernetes_only_expressions_are_listed_and_empty_here(evaluations: list[Evaluation]) -> None:
    k8s = [e for e in evaluations if e.expected_empty and metric_names(e.promql) & KUBERNETES_ONLY_METRICS]
    names = {name for e in k8s for name in metric_names(e.promql)} & KUBERNETES_ONLY_METRICS
    # Every listed Kubernetes-only metric is used somewhere (the list names real dependencies), and
    # none of them can exist in a local scrape.
    assert names == KUBERNETES_ONLY_METRICS
    not_empty = [e.expression.source for e in k8s if e.series]
    assert not not_empty, f"Kubernetes-only queries unexpectedly returned data: {not_empty}"


def test_alerts_read_inputs_that_have_data(stack: Stack, evaluations: list[Evaluation]) -> None:
    recorded = _recorded_names()
    alerts = [e for e in evaluations if e.expression.kind == "alert"]
    assert {e.expression.source for e in alerts} == {
        f"alert {r['alert']}"
        for g in yaml.safe_load(ALERTS_FILE.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    missing = []
    for evaluation in alerts:
        for name in metric_names(evaluation.promql) - KUBERNETES_ONLY_METRICS:
            assert name in recorded or name in stack.service_metric_names
            if not stack.query(name)["data"]["result"]:
                missing.append(f"{evaluation.expression.source} reads {name}, which has no data")
    assert not missing, "\n".join(missing)


def test_prometheus_evaluates_every_loaded_rule_without_error(stack: Stack, evaluations: list[Evaluation]) -> None:
    # `evaluations` first: it waits until every rule has been evaluated over the traffic.
    body = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    shipped = [r for g in yaml.safe_load(ALERTS_FILE.read_text())["groups"] for r in g["rules"]]
    assert len(rules) == len(shipped)
    unhealthy = [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"]
    assert not unhealthy


def test_latency_panels_carry_trace_exemplars(stack: Stack) -> None:
    model = load_generator().build_ml_api_dashboard()
    from tests.observability.promql_sources import iter_panels

    targets = [t for p in iter_panels(model["panels"]) for t in p.get("targets", []) if t.get("exemplar")]
    assert targets, "no panel query asks for exemplars"
    without = []
    for target in targets:
        promql = substitute(target["expr"], VARIABLE_SETS["plain-release"])
        response = httpx.get(
            f"{stack.prometheus_url}/api/v1/query_exemplars",
            params={"query": promql, "start": stack.traffic_started - 5, "end": time.time() + 5},
            timeout=10,
        ).json()
        exemplars = [x for series in response["data"] for x in series["exemplars"]]
        if not exemplars:
            without.append(target["expr"])
        for exemplar in exemplars:
            assert re.fullmatch(r"[0-9a-f]{32}", exemplar["labels"]["trace_id"])
    assert not without, "exemplar-enabled queries with no exemplars:\n" + "\n".join(without)


def test_adapter_rule_yields_one_value_per_pod(stack: Stack) -> None:
    matchers = f'namespace="{SIM_NAMESPACE}",pod=~"{SIM_POD}"'
    series_query, metrics_query = adapter_expressions(matchers, "pod")
    series = stack.query(series_query.expr)["data"]["result"]
    # Only the job with Kubernetes target labels qualifies: the adapter can map it to a pod.
    assert {s["metric"]["job"] for s in series} == {SIM_JOB}
    values = stack.query(metrics_query.expr)["data"]["result"]
    assert [v["metric"] for v in values] == [{"pod": SIM_POD}]
    assert float(values[0]["value"][1]) == 0.0  # nothing in flight once traffic has finished

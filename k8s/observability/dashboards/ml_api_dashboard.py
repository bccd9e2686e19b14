"""Grafana dashboards for ml-api, as code (grafana-foundation-sdk).

`make dashboards` runs this file and writes one JSON file per dashboard into
`charts/ml-api/dashboards/`; the chart turns each file into a ConfigMap that the Grafana sidecar of
kube-prometheus-stack loads. `tests/observability` checks the committed JSON equals a fresh
rendering and evaluates every query against a real Prometheus scraping the real service.

Query conventions:
- Every panel and query uses the `${datasource}` variable, never a datasource uid, so the
  dashboard works in any Grafana.
- Service series are selected with `namespace=~"$namespace", job=~"$release"`. The variables
  default to "All" = `.*`, which also matches an absent label, so the same queries return data
  from a plain local Prometheus scrape (labels job/instance only) and from a Kubernetes scrape
  (namespace, pod, service, job added by the ServiceMonitor).
- Kubernetes-only series (cAdvisor, kube-state-metrics, DCGM exporter) are restricted to the
  release's pods with `and on (namespace, pod) up{...}`: the service's own scrape targets name
  the pods, so no pod-name pattern has to be guessed.
- The one log panel (recent prediction records) uses the `${logs}` variable, a Loki datasource:
  the OpenTelemetry Collector ships the pods' stderr to Loki with their Kubernetes attributes as
  stream labels (`k8s_namespace_name`, `k8s_deployment_name`, `k8s_container_name`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, logs, stat, timeseries
from grafana_foundation_sdk.builders import loki as loki_query
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

REPO_ROOT = Path(__file__).resolve().parents[3]
OUTPUT_DIR = REPO_ROOT / "charts" / "ml-api" / "dashboards"

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOGS_DS = dm.DataSourceRef(type_val="loki", uid="${logs}")

# Label selectors shared by the queries (see the module docstring).
SVC = 'namespace=~"$namespace", job=~"$release"'
MODEL = f'{SVC}, model=~"$model"'
# Inference requests by front end (`/api/v1`, `/v2` REST, gRPC): gRPC calls never reach the HTTP
# series (`http_requests_total`), so this is the one series that compares the protocols.
PROTOCOL = f'{SVC}, protocol=~"$protocol"'
# The outcomes that are the server's fault or its capacity's, whatever the protocol's status codes.
SERVER_OUTCOMES = 'outcome=~"error|unavailable|timeout"'
# Probes and scrapes are not user traffic; they would dominate the request rate of an idle pod.
API = f'{SVC}, handler!~"/metrics|/health.*"'
RELEASE_PODS = 'and on (namespace, pod) up{namespace=~"$namespace", job=~"$release"}'
CONTAINERS = 'namespace=~"$namespace", container!="", container!="POD"'

QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
SHADOW_PAIR = "model, primary_version, shadow_version"


def _target(expr: str, legend: str, ref: str, *, exemplar: bool = False) -> prom.Dataquery:
    query = prom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS).range()
    if exemplar:
        query = query.exemplar(True)
    return query


def _refs() -> list[str]:
    return [chr(ord("A") + i) for i in range(26)]


def _timeseries(
    title: str,
    description: str,
    queries: list[tuple[str, str]],
    *,
    unit: str,
    exemplar: bool = False,
    width: int = 12,
    stack: bool = False,
    no_value: str | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10 if not stack else 60)
        .legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    if stack:
        panel = panel.stacking(_stacking())
    if no_value is not None:
        panel = panel.no_value(no_value)
    for ref, (expr, legend) in zip(_refs(), queries, strict=False):
        panel = panel.with_target(_target(expr, legend, ref, exemplar=exemplar))
    return panel


def _stacking() -> Any:
    from grafana_foundation_sdk.builders.common import StackingConfig

    return StackingConfig().mode(common.StackingMode.NORMAL)


def _quantiles(metric: str, selector: str, by: str, legend: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{name} {legend}".strip(),
        )
        for q, name in QUANTILES
    ]


def _variables() -> list[Any]:
    datasource = (
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .regex("")
        .current(dm.VariableOption(selected=True, text="Prometheus", value="prometheus"))
    )

    def query_var(name: str, label: str, query: str) -> dash.QueryVariable:
        return (
            dash.QueryVariable(name)
            .label(label)
            .datasource(DS)
            .query({"query": query, "refId": f"{name}-variable"})
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .include_all(True)
            .multi(True)
            # `.*` also matches series without the label (a scrape outside Kubernetes).
            .all_value(".*")
            .current(dm.VariableOption(selected=True, text="All", value="$__all"))
        )

    logs_datasource = (
        dash.DatasourceVariable("logs")
        .label("Logs")
        .type("loki")
        .regex("")
        .current(dm.VariableOption(selected=True, text="Loki", value="loki"))
    )
    return [
        datasource,
        logs_datasource,
        query_var("namespace", "Namespace", "label_values(ml_api_model_loaded, namespace)"),
        # In Kubernetes `job` is the Service name the ServiceMonitor scrapes, one per release.
        query_var("release", "Release", 'label_values(ml_api_model_loaded{namespace=~"$namespace"}, job)'),
        query_var(
            "model",
            "Model",
            'label_values(ml_api_model_loaded{namespace=~"$namespace", job=~"$release"}, model)',
        ),
        query_var(
            "protocol",
            "Protocol",
            'label_values(ml_api_protocol_requests_total{namespace=~"$namespace", job=~"$release"}, protocol)',
        ),
    ]


def _traffic_panels() -> list[Any]:
    rate = "[$__rate_interval]"
    return [
        _timeseries(
            "Request rate by route",
            "API requests per second by route template (probes and /metrics excluded).",
            [(f"sum by (handler) (rate(http_requests_total{{{API}}}{rate}))", "{{handler}}")],
            unit="reqps",
        ),
        _timeseries(
            "Requests by status class",
            "API requests per second by status class (2xx..5xx).",
            [(f"sum by (status) (rate(http_requests_total{{{API}}}{rate}))", "{{status}}")],
            unit="reqps",
            stack=True,
        ),
        _timeseries(
            "Error ratio",
            "Share of API requests answered 5xx (server errors, the alerting SLI) and 4xx (client errors). "
            "`or 0 *` keeps the line at 0 instead of empty while no error happened.",
            [
                (
                    f'(sum(rate(http_requests_total{{{API}, status="5xx"}}{rate})) '
                    f"or 0 * sum(rate(http_requests_total{{{API}}}{rate}))) "
                    f"/ sum(rate(http_requests_total{{{API}}}{rate}))",
                    "5xx",
                ),
                (
                    f'(sum(rate(http_requests_total{{{API}, status="4xx"}}{rate})) '
                    f"or 0 * sum(rate(http_requests_total{{{API}}}{rate}))) "
                    f"/ sum(rate(http_requests_total{{{API}}}{rate}))",
                    "4xx",
                ),
            ],
            unit="percentunit",
        ),
        _timeseries(
            "Inference requests by protocol",
            "Inference requests per second by front-end protocol (v1 = /api/v1, v2-rest = /v2, v2-grpc = "
            "inference.GRPCInferenceService/ModelInfer) and outcome, in one vocabulary whatever the protocol's "
            "status codes. gRPC calls appear only here: they are not HTTP requests.",
            [
                (
                    f"sum by (protocol, outcome) (rate(ml_api_protocol_requests_total{{{PROTOCOL}}}{rate}))",
                    "{{protocol}} {{outcome}}",
                )
            ],
            unit="reqps",
            stack=True,
        ),
        _timeseries(
            "Server error ratio by protocol",
            "Share of each protocol's inference requests that ended in error, unavailable (overload, not ready, "
            "draining) or timeout. `or 0 *` keeps a protocol's line at 0 while it had traffic and no such error.",
            [
                (
                    f"(sum by (protocol) (rate(ml_api_protocol_requests_total{{{PROTOCOL}, {SERVER_OUTCOMES}}}{rate})) "
                    f"or 0 * sum by (protocol) (rate(ml_api_protocol_requests_total{{{PROTOCOL}}}{rate}))) "
                    f"/ sum by (protocol) (rate(ml_api_protocol_requests_total{{{PROTOCOL}}}{rate}))",
                    "{{protocol}}",
                )
            ],
            unit="percentunit",
        ),
        _timeseries(
            "Predictions by outcome",
            "Images classified per second by model, version and outcome "
            "(success, invalid_image, timeout, overloaded, error).",
            [
                (
                    f"sum by (model, version, outcome) (rate(ml_api_predictions_total{{{MODEL}}}{rate}))",
                    "{{model}}:{{version}} {{outcome}}",
                )
            ],
            unit="ops",
            stack=True,
        ),
    ]


def _latency_panels() -> list[Any]:
    return [
        _timeseries(
            "Latency by route (p50/p95/p99)",
            "HTTP request duration quantiles per route. Exemplars (dots) carry the trace ID: click one to "
            "open the request's trace in Tempo.",
            _quantiles("http_request_duration_seconds", API, "handler", "{{handler}}"),
            unit="s",
            exemplar=True,
            width=24,
        ),
        _timeseries(
            "Latency by protocol (p50/p95/p99)",
            "Inference request duration quantiles per front-end protocol, as each front end measured it "
            "(gRPC included), with exemplars.",
            _quantiles("ml_api_protocol_request_duration_seconds", PROTOCOL, "protocol", "{{protocol}}"),
            unit="s",
            exemplar=True,
            width=24,
        ),
        _timeseries(
            "Inference time per batch (p50/p95/p99)",
            "Model forward time per batch by model and version, with exemplars.",
            _quantiles("ml_api_inference_duration_seconds", MODEL, "model, version", "{{model}}:{{version}}"),
            unit="s",
            exemplar=True,
        ),
        _timeseries(
            "Queue wait (p50/p95/p99)",
            "Time an image waits in the batch queue before its batch starts, with exemplars.",
            _quantiles("ml_api_queue_wait_seconds", MODEL, "model, version", "{{model}}:{{version}}"),
            unit="s",
            exemplar=True,
        ),
        _timeseries(
            "Image decode time (p50/p95/p99)",
            "Time to decode an uploaded or fetched image.",
            _quantiles("ml_api_image_decode_seconds", SVC, "job", ""),
            unit="s",
            exemplar=True,
        ),
        _timeseries(
            "Async job duration (p50/p95/p99)",
            "Async jobs from submission to their final state.",
            _quantiles("ml_api_job_duration_seconds", SVC, "job", ""),
            unit="s",
        ),
    ]


def _load_panels() -> list[Any]:
    rate = "[$__rate_interval]"
    batch_heatmap = (
        heatmap.Panel()
        .title("Batch size distribution")
        .description("Images per model batch: how full the dynamic batcher's batches are.")
        .datasource(DS)
        .height(8)
        .span(12)
        .calculate(False)
        .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges"))
        .with_target(
            _target(f"sum by (le) (increase(ml_api_batch_size_bucket{{{MODEL}}}{rate}))", "{{le}}", "A").format(
                PromQueryFormat.HEATMAP
            )
        )
    )
    return [
        _timeseries(
            "In-flight requests per pod",
            "Inference requests in progress in each pod, of every protocol (/api/v1, /v2, gRPC share one "
            "batcher): the HPA's custom metric (prometheus-adapter).",
            [(f"sum by (instance) (ml_api_inflight_requests{{{SVC}}})", "{{instance}}")],
            unit="short",
        ),
        _timeseries(
            "Queue depth",
            "Images waiting in the batch queue per model version, and async jobs waiting.",
            [
                (f"sum by (model, version) (ml_api_queue_depth{{{MODEL}}})", "{{model}}:{{version}} images"),
                (f"sum(ml_api_jobs_queue_depth{{{SVC}}})", "async jobs"),
            ],
            unit="short",
        ),
        batch_heatmap,
        _timeseries(
            "Average batch size",
            "Mean images per batch by model version.",
            [
                (
                    f"sum by (model, version) (rate(ml_api_batch_size_sum{{{MODEL}}}{rate})) "
                    f"/ sum by (model, version) (rate(ml_api_batch_size_count{{{MODEL}}}{rate}))",
                    "{{model}}:{{version}}",
                )
            ],
            unit="short",
        ),
        _timeseries(
            "Async jobs by outcome",
            "Async jobs finished per second (completed, failed).",
            [(f"sum by (outcome) (rate(ml_api_jobs_total{{{SVC}}}{rate}))", "{{outcome}}")],
            unit="ops",
        ),
        stat.Panel()
        .title("Models loaded")
        .description("1 when every pod has the model version loaded (minimum over pods).")
        .datasource(DS)
        .height(8)
        .span(12)
        .with_target(
            _target(f"min by (model, version) (ml_api_model_loaded{{{MODEL}}})", "{{model}}:{{version}}", "A").instant()
        ),
    ]


def _model_ops_panels() -> list[Any]:
    """Reloads of the models file, shadow traffic, the class distribution and the prediction log."""
    rate = "[$__rate_interval]"
    agreement = f"ml_api_shadow_agreement_total{{{MODEL}"
    recent = (
        logs.Panel()
        .title("Recent predictions")
        .description(
            "Sampled prediction records (ML_API_PREDICTION_LOG_RATE; off by default) from the pods' logs in Loki: "
            "image SHA-256 and size, the top-k served, model version, latency, front end. Never the image."
        )
        .datasource(LOGS_DS)
        .height(10)
        .span(24)
        .show_time(True)
        .wrap_log_message(True)
        .prettify_log_message(False)
        .enable_log_details(True)
        .sort_order(common.LogsSortOrder.DESCENDING)
        .no_value("No prediction records (ML_API_PREDICTION_LOG_RATE is 0, or no Loki datasource)")
        .with_target(
            loki_query.Dataquery()
            .expr(
                '{k8s_namespace_name=~"$namespace", k8s_deployment_name=~"$release", k8s_container_name="ml-api"} '
                '|= "service.predictions" | json | logger="service.predictions" | model=~"$model"'
            )
            .ref_id("A")
            .datasource(LOGS_DS)
            .max_lines(100)
        )
    )
    return [
        _timeseries(
            "Shadow agreement (top-1)",
            "Share of the images mirrored to a shadow version whose top-1 class matched the primary version's, "
            "per pair (alert MlApiShadowDisagreement under 90% over 30 minutes). `or 0 *` keeps it at 0 while "
            "nothing agreed.",
            [
                (
                    f'(sum by ({SHADOW_PAIR}) (rate({agreement}, agreed="true"}}{rate})) '
                    f"or 0 * sum by ({SHADOW_PAIR}) (rate({agreement}}}{rate}))) "
                    f"/ sum by ({SHADOW_PAIR}) (rate({agreement}}}{rate}))",
                    "{{model}} {{shadow_version}} vs {{primary_version}}",
                )
            ],
            unit="percentunit",
        ),
        _timeseries(
            "Shadow copies by outcome",
            "Images mirrored per second by outcome: success, failed, dropped (shed under load or over "
            "ML_API_SHADOW_MAX_INFLIGHT), unavailable (the shadow version is not loaded).",
            [
                (
                    f"sum by ({SHADOW_PAIR}, outcome) (rate(ml_api_shadow_requests_total{{{MODEL}}}{rate}))",
                    "{{model}} {{shadow_version}} {{outcome}}",
                )
            ],
            unit="ops",
            stack=True,
        ),
        _timeseries(
            "Shadow latency (p50/p95/p99)",
            "Time of one shadow copy (decode, background-priority queue, inference), per pair. Copies run after "
            "the primary answer is sent and never delay it.",
            _quantiles(
                "ml_api_shadow_duration_seconds",
                MODEL,
                SHADOW_PAIR,
                "{{model}} {{shadow_version}} vs {{primary_version}}",
            ),
            unit="s",
        ),
        _timeseries(
            "Predicted class distribution",
            "Share of each top-1 class among a version's successful classifications (models with at most 1000 "
            "classes): a class drifting away from its usual share, or a shadow version's distribution unlike "
            "its primary's, shows here first.",
            [
                (
                    f"sum by (model, version, class_id) (rate(ml_api_predicted_class_total{{{MODEL}}}{rate})) "
                    f"/ ignoring (class_id) group_left () "
                    f"sum by (model, version) (rate(ml_api_predicted_class_total{{{MODEL}}}{rate}))",
                    "{{model}}:{{version}} class {{class_id}}",
                )
            ],
            unit="percentunit",
        ),
        _timeseries(
            "Model config reloads",
            "Changes of the models file (ML_API_MODELS_FILE) per second by outcome: applied, invalid (rejected "
            "unread), failed (a version did not load); on the last two the pod keeps its models.",
            [(f"sum by (outcome) (rate(ml_api_model_config_reloads_total{{{SVC}}}{rate}))", "{{outcome}}")],
            unit="ops",
        ),
        _timeseries(
            "Model config generation and sync",
            "Generation of the model set each pod serves (1 at start, +1 per applied reload) and whether it is "
            "what its models file says (1) or the file's latest content was rejected (0, alert "
            "MlApiModelConfigRejected).",
            [
                (f"max by (instance) (ml_api_model_config_generation{{{SVC}}})", "{{instance}} generation"),
                (f"min by (instance) (ml_api_model_config_in_sync{{{SVC}}})", "{{instance}} in sync"),
            ],
            unit="short",
        ),
        recent,
    ]


def _autoscaling_panels() -> list[Any]:
    hpa = 'namespace=~"$namespace", horizontalpodautoscaler=~"$release"'
    return [
        _timeseries(
            "Replicas vs HPA desired",
            "Pods scraped (service metric) against the HorizontalPodAutoscaler's current, desired, min and "
            "max replicas (kube-state-metrics; the HPA is named after the release).",
            [
                (f"count(up{{{SVC}}} == 1)", "pods scraped"),
                (f"max(kube_horizontalpodautoscaler_status_current_replicas{{{hpa}}})", "current"),
                (f"max(kube_horizontalpodautoscaler_status_desired_replicas{{{hpa}}})", "desired"),
                (f"max(kube_horizontalpodautoscaler_spec_min_replicas{{{hpa}}})", "min"),
                (f"max(kube_horizontalpodautoscaler_spec_max_replicas{{{hpa}}})", "max"),
            ],
            unit="short",
        ),
        _timeseries(
            "In-flight per pod vs HPA target",
            "Average in-flight requests per pod (what the HPA sees through prometheus-adapter) against "
            "the HPA's target value.",
            [
                (f"avg(ml_api_inflight_requests{{{SVC}}})", "average per pod"),
                (
                    f"max(kube_horizontalpodautoscaler_spec_target_metric{{{hpa}, "
                    f'metric_name="ml_api_inflight_requests"}})',
                    "HPA target",
                ),
            ],
            unit="short",
        ),
    ]


def _resource_panels() -> list[Any]:
    rate = "[$__rate_interval]"
    return [
        _timeseries(
            "CPU usage per pod",
            "Cores used per pod (cAdvisor), with the pod's CPU limit.",
            [
                (
                    f"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{CONTAINERS}}}{rate})) "
                    f"{RELEASE_PODS}",
                    "{{pod}}",
                ),
                (
                    f'sum by (namespace, pod) (kube_pod_container_resource_limits{{namespace=~"$namespace", '
                    f'resource="cpu"}}) {RELEASE_PODS}',
                    "{{pod}} limit",
                ),
            ],
            unit="short",
        ),
        _timeseries(
            "Memory working set per pod",
            "Working-set bytes per pod (what the OOM killer compares to the limit), with the limit.",
            [
                (
                    f"sum by (namespace, pod) (container_memory_working_set_bytes{{{CONTAINERS}}}) {RELEASE_PODS}",
                    "{{pod}}",
                ),
                (
                    f'sum by (namespace, pod) (kube_pod_container_resource_limits{{namespace=~"$namespace", '
                    f'resource="memory"}}) {RELEASE_PODS}',
                    "{{pod}} limit",
                ),
            ],
            unit="bytes",
        ),
        _timeseries(
            "CPU throttling",
            "Share of CFS periods in which the pod was throttled: latency grows when this is high "
            "(raise the CPU limit or lower ML_API_TORCH_THREADS).",
            [
                (
                    f"sum by (namespace, pod) (rate(container_cpu_cfs_throttled_periods_total{{{CONTAINERS}}}{rate})) "
                    f"/ sum by (namespace, pod) (rate(container_cpu_cfs_periods_total{{{CONTAINERS}}}{rate})) "
                    f"{RELEASE_PODS}",
                    "{{pod}}",
                )
            ],
            unit="percentunit",
        ),
        # Outside the collapsed GPU row: it matters exactly where the GPU exporter shows nothing.
        stat.Panel()
        .title("GPU fallback (serving on CPU)")
        .description(
            "1 for a pod configured for the GPU (ML_API_DEVICE=cuda) that found no usable GPU and serves on "
            "the CPU (ml_api_device_fallback, alert MlApiGpuFallback); 0 for pods on their configured device."
        )
        .datasource(DS)
        .height(8)
        .span(12)
        .no_value("No pod reports its device")
        .with_target(_target(f"max by (namespace, pod) (ml_api_device_fallback{{{SVC}}})", "{{pod}}", "A").instant()),
    ]


def _gpu_panels() -> list[Any]:
    # dcgm-exporter in Kubernetes mode labels GPU series with the pod using the GPU.
    no_gpu = "No GPU metrics (needs NVIDIA dcgm-exporter and a GPU pod)"
    gpu = 'namespace=~"$namespace"'
    return [
        _timeseries(
            "GPU utilisation",
            "GPU utilisation per pod and GPU (DCGM_FI_DEV_GPU_UTIL, percent).",
            [(f"max by (namespace, pod, gpu) (DCGM_FI_DEV_GPU_UTIL{{{gpu}}}) {RELEASE_PODS}", "{{pod}} gpu{{gpu}}")],
            unit="percent",
            no_value=no_gpu,
        ),
        _timeseries(
            "GPU memory used",
            "Frame-buffer memory used per pod and GPU (DCGM_FI_DEV_FB_USED, MiB), with the total.",
            [
                (
                    f"max by (namespace, pod, gpu) (DCGM_FI_DEV_FB_USED{{{gpu}}}) {RELEASE_PODS}",
                    "{{pod}} gpu{{gpu}} used",
                ),
                (
                    f"max by (namespace, pod, gpu) (DCGM_FI_DEV_FB_USED{{{gpu}}} + DCGM_FI_DEV_FB_FREE{{{gpu}}}) "
                    f"{RELEASE_PODS}",
                    "{{pod}} gpu{{gpu}} total",
                ),
            ],
            unit="decmbytes",
            no_value=no_gpu,
        ),
    ]


def build_ml_api_dashboard() -> dict[str, Any]:
    builder = (
        dash.Dashboard("ml-api")
        .uid("ml-api-overview")
        .description("ml-api image classifier: traffic, errors, latency, batching, autoscaling, resources, GPU.")
        .tags(["ml-api"])
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
    )
    for variable in _variables():
        builder = builder.with_variable(variable)

    sections: list[tuple[str, list[Any]]] = [
        ("Traffic and errors", _traffic_panels()),
        ("Latency", _latency_panels()),
        ("Inference load and batching", _load_panels()),
        ("Autoscaling (kube-state-metrics)", _autoscaling_panels()),
        ("Pod resources (cAdvisor)", _resource_panels()),
    ]
    # Fixed ids keep panel links (e.g. `viewPanel=`) stable across regenerations.
    next_id = iter(range(1, 1000))
    for title, panels in sections:
        builder = builder.with_row(dash.Row(title).id(next(next_id)))
        for panel in panels:
            builder = builder.with_panel(panel.id(next(next_id)))
    # Collapsed: clusters without GPUs (kind, CPU nodes) have no DCGM series; the row stays closed
    # and out of the way there, and opens to data where dcgm-exporter runs.
    gpu_row = dash.Row("GPU (DCGM exporter, only where present)").id(next(next_id)).collapsed(True)
    for panel in _gpu_panels():
        gpu_row = gpu_row.with_panel(panel.id(next(next_id)))
    builder = builder.with_row(gpu_row)
    # Model operations last: appended after every earlier panel, so their ids and places stay as they were.
    builder = builder.with_row(dash.Row("Model operations (reloads, shadow traffic, predictions)").id(next(next_id)))
    for panel in _model_ops_panels():
        builder = builder.with_panel(panel.id(next(next_id)))

    encoded = json.dumps(builder.build(), cls=JSONEncoder)
    model: dict[str, Any] = json.loads(encoded)
    return model


def build_dashboards() -> dict[str, dict[str, Any]]:
    """File name (without directory) -> dashboard JSON model."""
    return {"ml-api-overview.json": build_ml_api_dashboard()}


def render(model: dict[str, Any]) -> str:
    # Stable output: sorted keys, trailing newline, so `make dashboards` is idempotent and diffs are small.
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUTPUT_DIR, help="output directory")
    parser.add_argument("--check", action="store_true", help="exit 1 when the files on disk are stale")
    args = parser.parse_args(argv)
    stale = []
    for name, model in build_dashboards().items():
        path = args.out / name
        text = render(model)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("stale dashboards (run `make dashboards`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

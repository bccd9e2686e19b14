# Observability: dashboards as code, alert rules, the monitoring stack for kind.
# Chart versions are pinned here; k8s/observability/*.yaml hold the values, docs/observability.md the steps.
OBS_DIR := k8s/observability
OBS_NAMESPACE ?= monitoring
GRAFANA_PORT ?= 3000

KPS_VERSION := 88.5.3
TEMPO_VERSION := 2.2.4
LOKI_VERSION := 18.11.0
OTEL_COLLECTOR_VERSION := 0.170.0
ADAPTER_VERSION := 5.3.0
METRICS_SERVER_VERSION := 3.13.1

# helm/kubectl from `make tools` (.tools/bin) when present, else from PATH.
OBS_HELM = $(if $(wildcard $(HELM)),$(HELM),helm)
OBS_KUBECTL = $(if $(wildcard $(KUBECTL)),$(KUBECTL),kubectl)
# KUBE_CONTEXT=<context> installs into that kubeconfig context, leaving the current one as it is
# (k8s/e2e/cluster.sh passes kind-ml-api); empty: the current context.
KUBE_CONTEXT ?=
OBS_HELM_CTX = $(if $(KUBE_CONTEXT),--kube-context $(KUBE_CONTEXT))
OBS_KUBECTL_CTX = $(if $(KUBE_CONTEXT),--context $(KUBE_CONTEXT))

define obs_require
	@command -v $(OBS_HELM) >/dev/null 2>&1 || { echo "helm not found: run 'make tools' (pinned helm v4 in .tools/bin) or install it: https://helm.sh/docs/intro/install/"; exit 1; }
	@command -v $(OBS_KUBECTL) >/dev/null 2>&1 || { echo "kubectl not found: run 'make tools' (pinned kubectl in .tools/bin) or install it: https://kubernetes.io/docs/tasks/tools/"; exit 1; }
	@$(OBS_KUBECTL) version $(OBS_KUBECTL_CTX) --request-timeout=5s >/dev/null 2>&1 || { echo "no reachable cluster in $(if $(KUBE_CONTEXT),the kubectl context $(KUBE_CONTEXT),the current kubectl context ($$($(OBS_KUBECTL) config current-context 2>/dev/null || echo none))): create one with 'make up' (kind)"; exit 1; }
endef

define obs_require_helm
	@command -v $(OBS_HELM) >/dev/null 2>&1 || { echo "helm not found: run 'make tools' (pinned helm v4 in .tools/bin) or install it: https://helm.sh/docs/intro/install/"; exit 1; }
endef

.PHONY: dashboards
dashboards: venv ## Regenerate charts/ml-api/dashboards/*.json from k8s/observability/dashboards (grafana-foundation-sdk)
	$(PY) $(OBS_DIR)/dashboards/ml_api_dashboard.py

# The unit tests run against the rules the chart's PrometheusRule carries for a release named ml-api.
ALERTS_RENDERED := build/alerts/ml-api-rules.yaml

.PHONY: alerts-test
alerts-test: venv ## promtool check + unit-test the alert rules (charts/ml-api/files/alerts.yaml, as the chart renders them)
	@command -v promtool >/dev/null 2>&1 || { echo "promtool not found: apt-get install prometheus (Debian/Ubuntu)"; exit 1; }
	$(obs_require_helm)
	promtool check rules charts/ml-api/files/alerts.yaml
	@mkdir -p $(dir $(ALERTS_RENDERED))
	$(OBS_HELM) template ml-api charts/ml-api --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml \
		| $(PY) -c 'import sys, yaml; print(yaml.safe_dump({"groups": yaml.safe_load(sys.stdin)["spec"]["groups"]}, sort_keys=False))' \
		> $(ALERTS_RENDERED)
	promtool check rules $(ALERTS_RENDERED)
	promtool test rules $(OBS_DIR)/alerts_test.yaml

.PHONY: observability-test
observability-test: venv ## Observability tests: dashboards fresh, promtool, values keys, live Prometheus against the service
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests/observability

.PHONY: observability
observability: ## Install Prometheus/Grafana/Alertmanager, Tempo, Loki, OTel Collector, prometheus-adapter, metrics-server (pinned) into the current cluster
	$(obs_require)
	$(OBS_HELM) repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update
	$(OBS_HELM) repo add grafana-community https://grafana-community.github.io/helm-charts --force-update
	$(OBS_HELM) repo add open-telemetry https://open-telemetry.github.io/opentelemetry-helm-charts --force-update
	$(OBS_HELM) repo add metrics-server https://kubernetes-sigs.github.io/metrics-server/ --force-update
	$(OBS_HELM) repo update prometheus-community grafana-community open-telemetry metrics-server
	$(OBS_HELM) upgrade --install metrics-server metrics-server/metrics-server --version $(METRICS_SERVER_VERSION) \
		--namespace kube-system -f $(OBS_DIR)/metrics-server.yaml --wait --timeout 5m $(OBS_HELM_CTX)
	$(OBS_HELM) upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack --version $(KPS_VERSION) \
		--namespace $(OBS_NAMESPACE) --create-namespace -f $(OBS_DIR)/kube-prometheus-stack.yaml --wait --timeout 10m $(OBS_HELM_CTX)
	$(OBS_HELM) upgrade --install tempo grafana-community/tempo --version $(TEMPO_VERSION) \
		--namespace $(OBS_NAMESPACE) -f $(OBS_DIR)/tempo.yaml --wait --timeout 5m $(OBS_HELM_CTX)
	$(OBS_HELM) upgrade --install loki grafana-community/loki --version $(LOKI_VERSION) \
		--namespace $(OBS_NAMESPACE) -f $(OBS_DIR)/loki.yaml --wait --timeout 10m $(OBS_HELM_CTX)
	$(OBS_HELM) upgrade --install otel-collector open-telemetry/opentelemetry-collector --version $(OTEL_COLLECTOR_VERSION) \
		--namespace $(OBS_NAMESPACE) -f $(OBS_DIR)/otel-collector.yaml --wait --timeout 5m $(OBS_HELM_CTX)
	$(OBS_HELM) upgrade --install prometheus-adapter prometheus-community/prometheus-adapter --version $(ADAPTER_VERSION) \
		--namespace $(OBS_NAMESPACE) -f $(OBS_DIR)/prometheus-adapter.yaml --wait --timeout 5m $(OBS_HELM_CTX)
	@echo "Stack installed in namespace $(OBS_NAMESPACE). Open Grafana with: make grafana"

.PHONY: observability-pull
observability-pull: ## Download the pinned upstream chart archives into .cache/charts (enables the helm-template tests)
	$(obs_require_helm)
	@mkdir -p .cache/charts
	$(OBS_HELM) pull kube-prometheus-stack --repo https://prometheus-community.github.io/helm-charts --version $(KPS_VERSION) -d .cache/charts
	$(OBS_HELM) pull prometheus-adapter --repo https://prometheus-community.github.io/helm-charts --version $(ADAPTER_VERSION) -d .cache/charts
	$(OBS_HELM) pull tempo --repo https://grafana-community.github.io/helm-charts --version $(TEMPO_VERSION) -d .cache/charts
	$(OBS_HELM) pull loki --repo https://grafana-community.github.io/helm-charts --version $(LOKI_VERSION) -d .cache/charts
	$(OBS_HELM) pull opentelemetry-collector --repo https://open-telemetry.github.io/opentelemetry-helm-charts --version $(OTEL_COLLECTOR_VERSION) -d .cache/charts
	$(OBS_HELM) pull metrics-server --repo https://kubernetes-sigs.github.io/metrics-server/ --version $(METRICS_SERVER_VERSION) -d .cache/charts
	@echo "Run the render tests with: ML_API_UPSTREAM_CHARTS=$(CURDIR)/.cache/charts make observability-test"

.PHONY: grafana
grafana: ## Port-forward Grafana to http://127.0.0.1:$(GRAFANA_PORT) (user admin)
	$(obs_require)
	@echo "Grafana: http://127.0.0.1:$(GRAFANA_PORT)  user: admin  password: $$($(OBS_KUBECTL) -n $(OBS_NAMESPACE) get secret grafana -o jsonpath='{.data.admin-password}' $(OBS_KUBECTL_CTX) | base64 -d)"
	@echo "Dashboard: Dashboards > ml-api (uid ml-api-overview): http://127.0.0.1:$(GRAFANA_PORT)/d/ml-api-overview"
	$(OBS_KUBECTL) -n $(OBS_NAMESPACE) port-forward svc/grafana $(GRAFANA_PORT):80 $(OBS_KUBECTL_CTX)

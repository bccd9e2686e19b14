# Helm chart: lint, render, README parameters table, package, tests.
CHART_DIR := charts/ml-api

.PHONY: chart-readme
chart-readme: tools ## Regenerate the chart README parameters table from the ## @param comments in values.yaml
	$(README_GENERATOR) --values $(CHART_DIR)/values.yaml --readme $(CHART_DIR)/README.md

.PHONY: chart-lint
chart-lint: tools ## helm lint --strict the chart with its defaults and every ci/*-values.yaml
	$(HELM) lint --strict $(CHART_DIR)
	@set -e; for f in $(CHART_DIR)/ci/*-values.yaml; do echo "==> $$f"; $(HELM) lint --strict $(CHART_DIR) -f $$f; done

.PHONY: chart-template
chart-template: tools ## Render the chart with the default values (pass VALUES=ci/gpu-values.yaml for a case)
	$(HELM) template ml-api $(CHART_DIR) --api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1 $(if $(VALUES),-f $(CHART_DIR)/$(VALUES))

.PHONY: chart-package
chart-package: tools ## Package the chart into dist/
	$(HELM) package $(CHART_DIR) --destination dist

.PHONY: chart-test
chart-test: venv tools ## Run the chart test suite (tests/chart)
	HELM=$(HELM) $(PY) -m pytest -ra $(PYTEST_ARGS) tests/chart

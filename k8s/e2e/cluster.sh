#!/usr/bin/env bash
# The kind dev loop and cluster e2e setup for ml-api, in one place: `make up/dev/port-forward/e2e/down`
# call it, and so do the e2e fixtures (e2e/kind.py), so the suite tests exactly what users run.
#
# DRY_RUN=1 prints every docker/kind/kubectl/helm/skaffold/make invocation instead of running it
# (missing tools are then reported but do not stop the run), which is how tests/test_devloop.py
# checks the path on machines that cannot create a cluster.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: k8s/e2e/cluster.sh COMMAND [ARGS]
  check TOOL...          exit 1 naming each missing tool (docker kind kubectl helm skaffold) and how to install it
  up                     create the kind cluster if missing, build the image (make image), kind load it,
                         helm upgrade --install --wait, print the port-forward command
  install [VALUES...] [-- HELM_ARGS...]
                         helm upgrade --install the chart with k8s/e2e/values-kind.yaml plus VALUES files
  dev                    skaffold dev against the kind cluster (PROFILES=gpu,observability to add profiles)
  port-forward           kubectl port-forward the Service to 127.0.0.1:$LOCAL_PORT
  gpu-capacity add|remove  advertise (or withdraw) nvidia.com/gpu on the GPU-labelled worker
  metrics-server         install metrics-server (for the HPA)
  observability          make observability (k8s/observability/ stack, namespace monitoring) on the kind cluster
  e2e                    run the e2e suite (E2E_TARGETS, default kind)
  down                   delete the kind cluster
environment: CLUSTER NAMESPACE RELEASE IMAGE LOCAL_PORT KIND_NODE_IMAGE PROFILES E2E_TARGETS HELM_WAIT DRY_RUN
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# helm and kubectl pinned by `make tools` win over whatever else is on PATH.
export PATH="$ROOT/.tools/bin:$PATH"

CLUSTER=${CLUSTER:-ml-api}
CONTEXT="kind-$CLUSTER"
NAMESPACE=${NAMESPACE:-ml-api}
RELEASE=${RELEASE:-ml-api}
CHART=${CHART:-charts/ml-api}
IMAGE=${IMAGE:-ml-api:local}
LOCAL_PORT=${LOCAL_PORT:-8000}
KIND_CONFIG=${KIND_CONFIG:-k8s/kind-config.yaml}
HELM_TIMEOUT=${HELM_TIMEOUT:-5m}
PY=${PY:-.venv/bin/python}
MAKE=${MAKE:-make}
case "${DRY_RUN:-}" in 1 | true | yes) DRY=1 ;; *) DRY= ;; esac

# The repository part and the tag of IMAGE (a registry host:port has no tag after its last '/').
image_repo() { local last=${IMAGE##*/}; if [[ $last == *:* ]]; then echo "${IMAGE%:*}"; else echo "$IMAGE"; fi; }
image_tag() { local last=${IMAGE##*/}; if [[ $last == *:* ]]; then echo "${last##*:}"; else echo latest; fi; }

# Print the command (shell-quoted, so it can be pasted), then run it unless this is a dry run.
run() {
  local quoted
  quoted=$(printf '%q ' "$@")
  printf '+ %s\n' "${quoted% }"
  [[ -n $DRY ]] || "$@"
}

hint() {
  case $1 in
    docker) echo "Docker Engine with a running daemon (docker info must work): https://docs.docker.com/engine/install/" ;;
    kind) echo "kind >= 0.24: 'go install sigs.k8s.io/kind@latest' or a release binary, see https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
    kubectl | helm) echo "'make tools' installs the pinned $1 into .tools/bin" ;;
    skaffold) echo "skaffold v2 (schema skaffold/v4beta14): https://skaffold.dev/docs/install/" ;;
    *) echo "install $1" ;;
  esac
}

# Exit 1 listing every missing tool with its install hint; in a dry run only report them.
need() {
  local tool missing=()
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      missing+=("$tool: not on PATH; install: $(hint "$tool")")
    elif [[ $tool == docker ]] && ! docker info >/dev/null 2>&1; then
      missing+=("docker: the daemon is not reachable; $(hint docker)")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  printf 'missing tools:\n' >&2
  printf '  - %s\n' "${missing[@]}" >&2
  if [[ -n $DRY ]]; then
    echo "(dry run: continuing without them)" >&2
    return 0
  fi
  exit 1
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

ensure_cluster() {
  local create=(kind create cluster --name "$CLUSTER" --config "$KIND_CONFIG" --wait 120s)
  [[ -n ${KIND_NODE_IMAGE:-} ]] && create+=(--image "$KIND_NODE_IMAGE")
  if [[ -n $DRY ]]; then
    echo "# only when 'kind get clusters' does not list $CLUSTER:"
    run "${create[@]}"
  elif cluster_exists; then
    echo "kind cluster $CLUSTER exists; reusing it"
  else
    run "${create[@]}"
  fi
}

# Helm 4 applies server-side. The chart leaves spec.replicas out whenever an HPA or KEDA owns it, so
# another manager only ever holds a field the chart sets on purpose: after an HPA was switched off,
# or after `kubectl scale`, kube-controller-manager (or kubectl) owns .spec.replicas and a plain
# server-side upgrade stops with a conflict. --force-conflicts gives such fields back to the chart
# (replicaCount), as Helm 3's client-side three-way merge did. `true` rather than Helm's default
# `auto` (the previous release's method), so a release first installed client-side behaves the same.
# skaffold.yaml passes the same flags to its helm install/upgrade.
HELM_APPLY=(--server-side=true --force-conflicts)

# install [VALUES_FILE...] [-- EXTRA_HELM_ARGS...]; HELM_WAIT=0 returns without waiting for readiness
# (the GPU test wants to watch a pod that cannot be scheduled yet).
install() {
  local values=(-f k8s/e2e/values-kind.yaml) extra=() wait=(--wait --timeout "$HELM_TIMEOUT")
  while (($#)); do
    if [[ $1 == -- ]]; then shift; extra=("$@"); break; fi
    values+=(-f "$1"); shift
  done
  [[ ${HELM_WAIT:-1} == 0 ]] && wait=()
  run helm upgrade --install "$RELEASE" "$CHART" --kube-context "$CONTEXT" \
    --namespace "$NAMESPACE" --create-namespace "${values[@]}" \
    --set "image.repository=$(image_repo)" --set "image.tag=$(image_tag)" \
    "${HELM_APPLY[@]}" "${wait[@]}" "${extra[@]}"
}

port_forward_cmd() {
  printf 'kubectl --context %s -n %s port-forward svc/%s %s:8000 --address 127.0.0.1' \
    "$CONTEXT" "$NAMESPACE" "$RELEASE" "$LOCAL_PORT"
}

# The releases `make observability` installs: name, namespace, chart version variable there.
OBS_RELEASES=(
  "metrics-server kube-system METRICS_SERVER_VERSION"
  "kube-prometheus-stack monitoring KPS_VERSION"
  "tempo monitoring TEMPO_VERSION"
  "loki monitoring LOKI_VERSION"
  "otel-collector monitoring OTEL_COLLECTOR_VERSION"
  "prometheus-adapter monitoring ADAPTER_VERSION"
)

# Print the releases of the stack not deployed at their pinned chart version (read-only helm
# calls; a dry run prints each call on fd 3 and reports every release as missing).
observability_missing() {
  local entry name namespace variable version meta
  for entry in "${OBS_RELEASES[@]}"; do
    read -r name namespace variable <<<"$entry"
    version=$(sed -n "s/^$variable := *//p" mk/observability.mk)
    if [[ -n $DRY ]]; then
      run helm get metadata "$name" --namespace "$namespace" --kube-context "$CONTEXT" >&3
      echo "$name"
      continue
    fi
    meta=$(helm get metadata "$name" --namespace "$namespace" --kube-context "$CONTEXT" 2>/dev/null) || meta=
    if ! grep -qx "VERSION: $version" <<<"$meta" || ! grep -qx "STATUS: deployed" <<<"$meta"; then
      echo "$name"
    fi
  done
}

gpu_node() {
  if [[ -n $DRY ]]; then
    run kubectl --context "$CONTEXT" get nodes -l nvidia.com/gpu.present=true -o name >&2
    echo "node/$CLUSTER-worker2"
  else
    kubectl --context "$CONTEXT" get nodes -l nvidia.com/gpu.present=true -o name | head -n 1
  fi
}

gpu_capacity() {
  local node
  node=$(gpu_node)
  [[ -n $node ]] || { echo "no node labelled nvidia.com/gpu.present=true in $CONTEXT" >&2; exit 1; }
  case ${1:-} in
    add)
      run kubectl --context "$CONTEXT" patch "$node" --subresource=status --type=merge \
        --patch-file k8s/e2e/gpu-node-capacity.yaml
      ;;
    remove)
      run kubectl --context "$CONTEXT" patch "$node" --subresource=status --type=json \
        -p '[{"op":"remove","path":"/status/capacity/nvidia.com~1gpu"},{"op":"remove","path":"/status/allocatable/nvidia.com~1gpu"}]'
      ;;
    *) usage >&2; exit 2 ;;
  esac
}

cmd=${1:-}
shift || true
case $cmd in
  check)
    need "$@"
    ;;
  up)
    need docker kind kubectl helm
    ensure_cluster
    run "$MAKE" image IMAGE="$IMAGE"
    run kind load docker-image "$IMAGE" --name "$CLUSTER"
    install
    echo "ml-api is up in kind cluster $CLUSTER (namespace $NAMESPACE). Reach it with:"
    echo "  make port-forward    # = $(port_forward_cmd)"
    echo "  curl -s http://127.0.0.1:$LOCAL_PORT/health/ready"
    ;;
  install)
    need kubectl helm
    install "$@"
    ;;
  dev)
    need docker kind kubectl helm skaffold
    ensure_cluster
    args=(skaffold dev --kube-context "$CONTEXT" --port-forward=user)
    profiles=${PROFILES:-}
    # skaffold.yaml builds with --provenance=false (kind load fails on attestation manifests); a
    # docker without buildx rejects that flag.
    if ! docker build --help 2>/dev/null | grep -q -e '--provenance'; then
      profiles=${profiles:+$profiles,}docker-without-buildx
    fi
    [[ -n $profiles ]] && args+=(--profile "$profiles")
    run "${args[@]}"
    ;;
  port-forward)
    need kubectl
    read -r -a pf <<<"$(port_forward_cmd)"
    run "${pf[@]}"
    ;;
  gpu-capacity)
    need kubectl
    gpu_capacity "$@"
    ;;
  metrics-server)
    # Same values and pinned chart version as `make observability` (k8s/observability/, mk/observability.mk).
    need kubectl helm
    ver=$(sed -n 's/^METRICS_SERVER_VERSION := *//p' mk/observability.mk)
    run helm upgrade --install metrics-server metrics-server \
      --repo https://kubernetes-sigs.github.io/metrics-server/ ${ver:+--version "$ver"} \
      --kube-context "$CONTEXT" --namespace kube-system \
      -f k8s/observability/metrics-server.yaml --wait --timeout "$HELM_TIMEOUT"
    ;;
  observability)
    # The stack of k8s/observability/ (pinned in mk/observability.mk), installed by
    # `make observability` into the kind context (never switching the user's current context), and
    # only when a release is missing or not at its pinned chart version: skaffold runs this before
    # every redeploy. `make observability KUBE_CONTEXT=...` re-applies changed values.
    need kubectl helm
    # fd 3: the dry run's printed helm calls bypass the capture.
    { stale=$(observability_missing); } 3>&1
    if [[ -z $stale ]]; then
      echo "observability stack already deployed in $CONTEXT at the pinned chart versions"
    else
      [[ -n $DRY ]] && echo "# only when one of the releases above is missing or at another chart version:"
      run "$MAKE" --no-print-directory observability KUBE_CONTEXT="$CONTEXT"
    fi
    ;;
  e2e)
    targets=${E2E_TARGETS:-kind}
    tools=()
    [[ ,$targets, == *,container,* ]] && tools+=(docker)
    [[ ,$targets, == *,kind,* ]] && tools+=(docker kind kubectl helm)
    need "${tools[@]}"
    run env E2E_TARGETS="$targets" "$PY" -m pytest -ra e2e
    ;;
  down)
    need kind
    run kind delete cluster --name "$CLUSTER"
    ;;
  -h | --help | help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac

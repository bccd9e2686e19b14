#!/usr/bin/env bash
# Make a Docker daemon available for the container tests (called by .ci/run before `make test`).
# Idempotent: installs docker.io, debootstrap and iptables only when missing, starts dockerd only
# when none answers, and (re)applies the egress guard every time, since the guard's rules are what
# keep test containers off private and link-local addresses.
#
# Docker's state (/var/lib/docker: the base image and the layer cache) and the debootstrap tarball
# (~/.cache/ml-api) stay on the machine, so later CI runs on it rebuild only what changed.
#
# When Docker cannot be had (not root, no package), this prints why and exits 0: the docker-marked
# tests then skip with that reason. CI_DOCKER_REQUIRED=1 turns that into a failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKER=/usr/bin/docker
LOG=${DOCKERD_LOG:-/var/log/ml-api-dockerd.log}
GUARD=""
for candidate in "${EGRESS_GUARD:-}" "$REPO/../shared/tools/docker-egress-guard.sh" "$REPO/shared/tools/docker-egress-guard.sh"; do
  if [[ -n "$candidate" && -f "$candidate" ]]; then
    GUARD=$candidate
    break
  fi
done

unavailable() {
  echo "ci-docker: Docker unavailable: $*; container tests will skip" >&2
  [[ "${CI_DOCKER_REQUIRED:-0}" == 1 ]] && exit 1
  exit 0
}

# The guard is not optional: without it no dockerd is started here (containers could reach
# private ranges), and the container tests skip for want of a daemon.
[[ -n "$GUARD" ]] || { echo "ci-docker: docker-egress-guard.sh not found (shared/tools); not starting Docker" >&2; exit 1; }

missing=()
[[ -x $DOCKER ]] && command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v iptables >/dev/null || missing+=(iptables)
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || unavailable "missing ${missing[*]} and not root to install them"
  echo "ci-docker: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || unavailable "apt-get install ${missing[*]} failed"
fi

if ! "$DOCKER" info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || unavailable "no daemon answers and not root to start one"
  echo "ci-docker: starting dockerd (log: $LOG)"
  mkdir -p "$(dirname "$LOG")"
  nohup dockerd >>"$LOG" 2>&1 &
  for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && break
    sleep 1
  done
  "$DOCKER" info >/dev/null 2>&1 || { tail -n 20 "$LOG" >&2; unavailable "dockerd did not come up in 60s"; }
fi

bash "$GUARD"
echo "ci-docker: Docker $("$DOCKER" version --format '{{.Server.Version}}') ready, egress guard applied ($GUARD)"

#!/usr/bin/env bash
# Build the local base image (Debian bookworm minbase + python3.11, venv, CA certificates) with
# debootstrap and `docker import`, because this project's CI cannot pull from a container registry.
# The Dockerfile's BASE_IMAGE defaults to python:3.11-slim for users who can pull; here `make image`
# overrides it with the image this script makes.
#
# Idempotent and cached twice over: an image that already exists under the tag is kept, and the
# rootfs tarball is kept under $ML_API_CACHE (default ~/.cache/ml-api) so a pruned Docker store
# is refilled with a `docker import` in seconds instead of a fresh debootstrap (minutes).
#
# Usage: scripts/base-image.sh [TAG]   (default ml-api-base:bookworm; FORCE=1 rebuilds everything)
set -euo pipefail

TAG=${1:-${BASE_IMAGE:-ml-api-base:bookworm}}
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv brings ensurepip's bundled pip wheel, so the builder needs no pip from the network
# to bootstrap the virtualenv. Nothing else: the runtime stage is this image plus /opt/venv.
PACKAGES=${BASE_PACKAGES:-python3,python3-venv,ca-certificates}
CACHE_DIR=${ML_API_CACHE:-$HOME/.cache/ml-api}
DOCKER=${DOCKER:-/usr/bin/docker}

# The cache key names everything that changes the rootfs, so a new package list never reuses an
# old tarball.
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "v1" | sha256sum | cut -c1-16)
tarball="$CACHE_DIR/base-$SUITE-$key.tar"

if [[ "${FORCE:-0}" != 1 ]] && "$DOCKER" image inspect "$TAG" >/dev/null 2>&1; then
  echo "base-image: $TAG exists, kept (FORCE=1 to rebuild)"
  exit 0
fi

if [[ "${FORCE:-0}" == 1 || ! -s "$tarball" ]]; then
  command -v debootstrap >/dev/null || {
    echo "base-image: debootstrap not found (apt-get install debootstrap)" >&2
    exit 1
  }
  mkdir -p "$CACHE_DIR"
  root=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  start=$(date +%s)
  echo "base-image: debootstrap $SUITE ($PACKAGES) from $MIRROR"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 || {
    tail -n 30 "$CACHE_DIR/debootstrap.log" >&2
    exit 1
  }
  # Nothing the image needs at run time: package caches and lists, docs, man pages, and the
  # logs that would make the tarball differ from run to run.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/var/log/* "$root"/var/cache/debconf/*-old "$root"/tmp/* "$root"/root/.cache
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
  tar --numeric-owner --xattrs -C "$root" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  echo "base-image: rootfs tarball $(du -h "$tarball" | cut -f1) in $(($(date +%s) - start))s -> $tarball"
fi

"$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "debootstrap $SUITE minbase + $PACKAGES" \
  "$tarball" "$TAG" >/dev/null
echo "base-image: imported $TAG ($("$DOCKER" image inspect -f '{{.Size}}' "$TAG") bytes)"

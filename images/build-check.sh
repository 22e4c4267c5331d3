#!/usr/bin/env bash
# Build the generate and serve images without a Docker daemon or registry, and smoke-run them.
#
#   images/build-check.sh
#
# No base image can be pulled here, so this makes stand-ins under the names the Dockerfile's
# FROM lines use: a Debian bookworm rootfs made with debootstrap (Python 3.11) stands for
# SLIM_BASE, and the same plus the CPU build of torch stands for CUDA_BASE (a real CUDA
# PyTorch base brings torch with CUDA). Then `buildah bud` builds the unchanged Dockerfile,
# and podman runs: generate prints its help; serve answers /healthz. Root; rootfs cached in
# $IMAGES_CACHE; the torch wheel is put in a temporary build context, never in the checkout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${IMAGES_CACHE:-/var/cache/alpaca-jobs/images}
SLIM=python:3.11-slim-bookworm
TORCH_BASE=localhost/alpaca-jobs/torch-cpu-base:stand-in
TAG=${TAG:-check}
log() { echo "[build-check] $*" >&2; }

command -v buildah >/dev/null && command -v podman >/dev/null && command -v debootstrap >/dev/null || {
  log "installing buildah, podman, debootstrap (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    buildah podman debootstrap runc catatonit >/dev/null
}
export CONTAINERS_CONF=$CACHE/containers.conf
mkdir -p "$CACHE"
printf '[containers]\ndefault_ulimits=["nofile=1024:1024","nproc=1024:1024"]\n[engine]\nruntime="runc"\ncgroup_manager="cgroupfs"\n' > "$CONTAINERS_CONF"

if ! buildah inspect --type image "$SLIM" >/dev/null 2>&1; then
  if [ ! -x "$CACHE/rootfs/usr/bin/python3" ]; then
    mirror=$(grep -hoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v snapshot | head -1 || true)
    log "debootstrap of a bookworm rootfs with python3 (~1 min, once)"
    rm -rf "$CACHE/rootfs"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
      bookworm "$CACHE/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$CACHE/debootstrap.log" 2>&1
  fi
  # TLS to the package index is intercepted on these machines: trust what this machine trusts.
  cp /etc/ssl/certs/ca-certificates.crt "$CACHE/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -f "$CACHE"/rootfs/usr/lib/python3*/EXTERNALLY-MANAGED
  ctr=$(buildah from scratch)
  buildah add "$ctr" "$CACHE/rootfs" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit -q "$ctr" "$SLIM" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

if ! buildah inspect --type image "$TORCH_BASE" >/dev/null 2>&1; then
  ctx=$(mktemp -d)
  wheel=$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1 || true)
  if [ -n "$wheel" ]; then cp "$wheel" "$ctx/"; else
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$ctx" torch==2.13.0; fi
  printf 'FROM %s\nCOPY *.whl /tmp/\nRUN python3 -m pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl\n' "$SLIM" > "$ctx/Dockerfile"
  log "stand-in CUDA_BASE: $SLIM + CPU torch"
  buildah bud -q --isolation chroot --pull=never -t "$TORCH_BASE" "$ctx" >/dev/null
  rm -rf "$ctx"
fi

cd "$ROOT"
for target in generate serve; do
  log "building $target"
  buildah bud -q --isolation chroot --pull=never --layers --format docker -f images/Dockerfile --target "$target" \
    --build-arg CUDA_BASE="$TORCH_BASE" -t "alpaca-jobs/$target:$TAG" . >/dev/null
done

log "smoke: generate prints its help"
podman run --rm --network=none "alpaca-jobs/generate:$TAG" --help | grep -q "Usage: alpaca-jobs"
[ "$(podman run --rm --network=none --entrypoint id "alpaca-jobs/generate:$TAG" -u)" = "1000" ]

log "smoke: serve answers /healthz"
port=${SMOKE_PORT:-18765}
podman rm -f alpaca-serve-smoke >/dev/null 2>&1 || true
podman run -d --name alpaca-serve-smoke --network=host "alpaca-jobs/serve:$TAG" \
  serve --host 127.0.0.1 --port "$port" >/dev/null
trap 'podman rm -f alpaca-serve-smoke >/dev/null 2>&1 || true' EXIT
for _ in $(seq 240); do
  if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz', timeout=2)" 2>/dev/null; then
    log "ok: generate and serve images built and ran"
    exit 0
  fi
  sleep 1
done
podman logs alpaca-serve-smoke 2>&1 | tail -20 >&2
log "serve never answered /healthz"
exit 1

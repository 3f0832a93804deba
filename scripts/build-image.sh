#!/usr/bin/env bash
# Builds the agent image from the Containerfile (`make image`) with podman, else docker, and
# prints its size.
#
#   IMAGE=hostplumber/plumber-agent:0.1.0 bash scripts/build-image.sh
#
# Settings:
#   IMAGE              tag to build (default hostplumber/plumber-agent:VERSION, the package
#                      version from scripts/version.sh, which the DaemonSet deploys)
#   BASE_IMAGE         base image (default: the Containerfile's python:3.11-slim-bookworm);
#                      tests/image passes the stand-in from scripts/make-base-image.sh
#   CONTAINER_RUNTIME  podman or docker (default: podman if installed, else docker)
#   PODMAN_RUNTIME     OCI runtime for podman (default: runc when installed; crun refuses hosts
#                      with a hybrid cgroup v1/v2 layout, runc works everywhere)
#   BUILD_CA_BUNDLE    a CA bundle mounted over the build's system bundle (podman only), for a
#                      network behind a TLS-inspecting proxy; default $PIP_CERT, else
#                      $SSL_CERT_FILE, else this machine's /etc/ssl/certs/ca-certificates.crt
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-hostplumber/plumber-agent:$(bash scripts/version.sh)}
if [ -z "${CONTAINER_RUNTIME:-}" ]; then
  if command -v podman >/dev/null; then CONTAINER_RUNTIME=podman
  elif command -v docker >/dev/null; then CONTAINER_RUNTIME=docker
  else echo "build-image.sh: neither podman nor docker is installed" >&2; exit 1
  fi
fi

runtime=("$CONTAINER_RUNTIME")
build_args=(build -f Containerfile -t "$IMAGE")
if [ -n "${BASE_IMAGE:-}" ]; then
  build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
if [ "$CONTAINER_RUNTIME" = podman ]; then
  oci=${PODMAN_RUNTIME:-$(command -v runc || true)}
  if [ -n "$oci" ]; then
    runtime+=(--runtime "$oci")
  fi
  ca_bundle=${BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-}}}
  if [ -z "$ca_bundle" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    ca_bundle=/etc/ssl/certs/ca-certificates.crt
  fi
  if [ -n "$ca_bundle" ]; then
    build_args+=(--volume "$(realpath "$ca_bundle"):/etc/ssl/certs/ca-certificates.crt:ro")
  fi
fi

start_s=$(date +%s)
"${runtime[@]}" "${build_args[@]}" .
size_bytes=$("${runtime[@]}" image inspect --format '{{.Size}}' "$IMAGE")
echo "==> built $IMAGE in $(( $(date +%s) - start_s )) s: $(( size_bytes / 1000000 )) MB"

#!/usr/bin/env bash
# Builds a local stand-in for the Containerfile's base image (python:3.11-slim-bookworm) from
# Debian packages, for machines that reach a Debian mirror but no container registry (CI).
#
#   bash scripts/make-base-image.sh [TAG]     prints the tag; default localhost/plumber-standin-base:<hash>
#
# It is `debootstrap --variant=minbase bookworm` plus Debian's python3 and python3-pip, imported
# with `podman import`. How it differs from the real base: Python is Debian's /usr/bin/python3
# (3.11.2 on bookworm) instead of the python image's own build in /usr/local/bin/python3.11; its
# pip is Debian's and "externally managed" (PEP 668), which the Containerfile never trips over
# because it installs only into a venv; it carries Debian's python3-setuptools/-wheel. Both are
# Debian 12 with apt-get, so the Containerfile's apt and ovs-vsctl steps are the same.
#
# Cached: the tag carries a hash of this script, and an existing image with that tag is reused,
# so a machine builds it once (about a minute) until this script changes.
# Settings: DEBIAN_MIRROR (default: the first bookworm mirror in /etc/apt), CONTAINER_RUNTIME
# (podman; docker works too).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
PACKAGES=python3,python3-pip,ca-certificates
RUNTIME=${CONTAINER_RUNTIME:-podman}
hash=$(sha256sum "scripts/make-base-image.sh" | cut -c1-12)
TAG=${1:-localhost/plumber-standin-base:${SUITE}-${hash}}

if "$RUNTIME" image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"
  exit 0
fi

mirror_from_apt() {
  # deb822 sources (URIs:/Suites:) first, then one-line sources.list entries.
  local file uri=""
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    uri=$(awk -v suite="$SUITE" '
      /^URIs:/ { uris = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) { print uris; exit } }
      /^$/ { uris = "" }' "$file")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    uri=$(awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }' "$file")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo "http://deb.debian.org/debian"
}

MIRROR=${DEBIAN_MIRROR:-$(mirror_from_apt)}
rootfs=$(mktemp -d /var/tmp/plumber-standin-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

echo "==> debootstrap $SUITE from $MIRROR into $rootfs" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >&2
# What the python image leaves out too: downloaded packages and apt lists.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

echo "==> importing it as $TAG" >&2
tar -C "$rootfs" --numeric-owner -c . | "$RUNTIME" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$TAG" >&2
echo "$TAG"

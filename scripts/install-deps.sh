#!/usr/bin/env bash
# Installs every system and Python dependency the agent's tests need on a fresh Debian 12
# machine (as root). Idempotent; CI (.ci/run) and `make deps` call it.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  iproute2 openvswitch-switch fuse3 libfuse2 shellcheck >/dev/null
# tests/image builds the container image (podman; runc because crun refuses hybrid cgroup
# layouts) on a stand-in base made with debootstrap.
apt-get install -y -qq --no-install-recommends podman runc debootstrap >/dev/null
# Userspace OVS is started per test in private directories; never the system service.
systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true

python3 -m pip install -q --upgrade pip
# constraints.txt pins every resolved package, as the image build does.
python3 -m pip install -q -c constraints.txt -e '.[test]'

# The full-kernel test tier (802.1Q VLANs etc.) boots Debian's kernel under qemu.
bash scripts/fetch-vm-kernel.sh

touch .deps-stamp

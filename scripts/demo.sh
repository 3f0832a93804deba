#!/usr/bin/env bash
# `make demo`: the agent in local mode, on an embedded default, with no cluster.
#
# A throw-away network namespace gets two veth "NICs" (enp3s0f0, enp3s0f1) standing in for an
# Intel X540 (8086:1528) whose SR-IOV sysfs is emulated (tests/sriov_emu, FUSE). The agent
# applies the seed README's SR-IOV and address examples (`run --templates DIR --once`), prints
# the HostNetwork, then the templates are removed and it undoes exactly what it did.
# Everything is torn down on exit, even on failure.
#
# PYTHON: the interpreter with plumber_agent and fusepy (`make demo` passes the virtual
# environment's from scripts/demo-venv.sh; default python3). This script installs no Python
# package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root (network namespaces, FUSE): sudo make demo" >&2
  exit 1
fi
if ! command -v ip >/dev/null || ! command -v fusermount >/dev/null || ! ldconfig -p | grep -q 'libfuse.so.2'; then
  echo "== installing iproute2, fuse3, libfuse2"
  apt-get update -qq && apt-get install -y -qq iproute2 fuse3 libfuse2 >/dev/null
fi
if ! "$PYTHON" -c 'import fuse, plumber_agent' 2>/dev/null; then
  echo "$PYTHON lacks plumber_agent or fusepy: run \`make demo\` (it installs both into a virtual environment)" >&2
  exit 1
fi

work=$(mktemp -d /tmp/plumber-demo.XXXXXX)
ns="plumber-demo-$$"
emu_pid=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  set +e
  [ -n "$emu_pid" ] && { fusermount -u "$work/sysfs" 2>/dev/null; kill "$emu_pid" 2>/dev/null; wait "$emu_pid" 2>/dev/null; }
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "== a throw-away node: namespace $ns with veth NICs enp3s0f0/enp3s0f1, emulated SR-IOV sysfs"
ip netns add "$ns"
ip -n "$ns" link set lo up
for nic in enp3s0f0 enp3s0f1; do
  ip -n "$ns" link add name "$nic" type veth peer name "${nic}p"
  ip -n "$ns" link set "$nic" up
  ip -n "$ns" link set "${nic}p" up
done
ip -n "$ns" addr add 192.168.195.99/24 dev enp3s0f1   # not in the template: will be removed, then restored
mkdir -p "$work/sysfs" "$work/templates" "$work/state"
"$PYTHON" -m tests.sriov_emu --mount "$work/sysfs" --preset ixgbe &
emu_pid=$!
for _ in $(seq 100); do [ -e "$work/sysfs/.emu/ready" ] && break; sleep 0.1; done
[ -e "$work/sysfs/.emu/ready" ] || { echo "the SR-IOV emulator did not start" >&2; exit 1; }

cp manifests/examples/02-sriovconfig-pfname.yaml manifests/examples/05-interface-addresses.yaml "$work/templates/"
agent=("$PYTHON" -m plumber_agent --log-format text --log-level warning run
       --templates "$work/templates" --node-name 10.128.237.204 --netns "$ns"
       --sysfs-root "$work/sysfs" --state-dir "$work/state" --no-monitor --once)

echo "== templates: $(cd "$work/templates" && echo *)"
echo "== plumber-agent run --templates ... --once   (the HostNetwork it publishes)"
status=0
"${agent[@]}" || status=$?

show_host() {
  ip -n "$ns" -br addr show
  ip -n "$ns" -o link show | awk '{print "  " $2, $4, $5}'
  for pf in 0000:03:00.0 0000:03:00.1; do
    echo "  $pf sriov_numvfs=$(cat "$work/sysfs/bus/pci/devices/$pf/sriov_numvfs")"
  done
}

echo "== the host now"
show_host

echo "== templates deleted (--allow-empty-templates): the agent undoes exactly what it did"
rm -f "$work/templates/"*
# An empty directory is refused as a likely mistake unless the undo is asked for explicitly.
"${agent[@]}" --allow-empty-templates >/dev/null || status=$?
show_host
exit "$status"

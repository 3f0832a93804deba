#!/usr/bin/env bash
# `make e2e`: the e2e scenarios (tests/e2e) on a throw-away multi-node kind cluster.
#
#   1. create a kind cluster (1 control-plane + 2 workers)
#   2. build the agent image from the Containerfile (docker or podman) and load it into kind
#   3. prepare test NICs in every kind node: dummy eno1, eno2, enp3s0f0, enp3s0f1; probe 802.1Q;
#      optionally start a userspace Open vSwitch in each node (E2E_KIND_OVS=1)
#   4. kubectl apply -k of manifests/ with the control-plane component (kind's control-plane
#      node is a test node too), then manifests/admission/, point the agents at an empty
#      sysfs root (kind nodes share this machine's real /sys: an e2e run must never touch
#      real SR-IOV NICs), wait for rollout
#   5. E2E_TARGET=kind python -m pytest -q tests/e2e
#   6. on failure: the agents' logs; always: delete the cluster (KEEP_CLUSTER=1 keeps it)
#
# DRY_RUN=1 prints every command instead of running it (what `make e2e-dry-run` does).
# Settings: KIND_CLUSTER_NAME (plumber-e2e), IMAGE (hostplumber/plumber-agent:VERSION, the
# package version from scripts/version.sh: the tag manifests/ deploy), E2E_CONTAINER_RUNTIME (docker|podman), PYTHON (python3), PYTEST_ARGS,
# E2E_KIND_OVS (0), KEEP_CLUSTER (0), ROLLOUT_TIMEOUT (180s).
set -euo pipefail

cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER_NAME:-plumber-e2e}"
IMAGE="${IMAGE:-hostplumber/plumber-agent:$(bash scripts/version.sh)}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
E2E_KIND_OVS="${E2E_KIND_OVS:-0}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-180s}"
NAMESPACE="plumber-system"
DAEMONSET="plumber-agent"
NICS=(eno1 eno2 enp3s0f0 enp3s0f1)
# Inside the agent container; a directory that does not exist is an empty sysfs: no PFs.
EMPTY_SYSFS="/var/lib/plumber-agent/e2e-no-sysfs"
WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/plumber-e2e-kind.XXXXXX")"
KIND_CONFIG="${WORKDIR}/kind-config.yaml"
INSTALL_DIR="${WORKDIR}/install"
export KUBECONFIG="${WORKDIR}/kubeconfig"

log() { printf '==> %s\n' "$*" >&2; }

# Every command goes through run: printed (DRY_RUN=1) or executed. Arguments stay an array.
run() {
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

pick_runtime() {
  if [[ -n "${E2E_CONTAINER_RUNTIME:-}" ]]; then
    echo "${E2E_CONTAINER_RUNTIME}"
  elif command -v docker >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  elif [[ "${DRY_RUN}" == "1" ]]; then
    echo docker
  else
    echo "e2e-kind: neither docker nor podman found" >&2
    exit 1
  fi
}

RUNTIME="$(pick_runtime)"
if [[ "${RUNTIME}" == "podman" ]]; then
  export KIND_EXPERIMENTAL_PROVIDER=podman
fi

require_tools() {
  local tool missing=()
  for tool in kind kubectl "${RUNTIME}" "${PYTHON}"; do
    command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool}")
  done
  if ((${#missing[@]})); then
    echo "e2e-kind: missing tools: ${missing[*]} (install kind, kubectl and docker or podman)" >&2
    exit 1
  fi
}

write_kind_config() {
  cat >"${KIND_CONFIG}" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
EOF
}

# manifests/ plus the control-plane component, by relative paths (kustomize refuses absolute
# ones).
write_install_kustomization() {
  local rel
  mkdir -p "${INSTALL_DIR}"
  rel=$(realpath --relative-to="${INSTALL_DIR}" manifests)
  cat >"${INSTALL_DIR}/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ${rel}
components:
  - ${rel}/components/control-plane
EOF
}

cluster_nodes() {
  if [[ "${DRY_RUN}" == "1" ]]; then
    printf '%s\n' "${CLUSTER}-control-plane" "${CLUSTER}-worker" "${CLUSTER}-worker2"
  else
    kind get nodes --name "${CLUSTER}"
  fi
}

collect_logs() {
  log "agent logs (failure)"
  run kubectl get pods -n "${NAMESPACE}" -o wide || true
  run kubectl logs -n "${NAMESPACE}" -l app.kubernetes.io/name=plumber-agent --all-containers --prefix --tail=-1 || true
  run kubectl get hostnetworks -o yaml || true
}

cleanup() {
  local rc=$?
  if [[ "${rc}" != "0" ]]; then
    collect_logs
  fi
  if [[ "${KEEP_CLUSTER}" == "1" ]]; then
    log "KEEP_CLUSTER=1: cluster ${CLUSTER} kept (KUBECONFIG=${KUBECONFIG})"
  else
    log "deleting cluster ${CLUSTER}"
    run kind delete cluster --name "${CLUSTER}" || true
    rm -rf "${WORKDIR}"
  fi
  exit "${rc}"
}

prepare_node() {
  local node=$1 nic
  for nic in "${NICS[@]}"; do
    run "${RUNTIME}" exec "${node}" ip link add name "${nic}" type dummy
    run "${RUNTIME}" exec "${node}" ip link set "${nic}" up
  done
  # Probe 802.1Q (this also loads 8021q where the kernel autoloads modules).
  if run "${RUNTIME}" exec "${node}" ip link add link eno1 name e2eprobe type vlan id 4094; then
    run "${RUNTIME}" exec "${node}" ip link del e2eprobe
  else
    E2E_VLAN=0
  fi
  if [[ "${E2E_KIND_OVS}" == "1" ]]; then
    # A userspace OVS (datapath netdev) in the node; the agent reaches it via the
    # /var/run/openvswitch hostPath.
    run "${RUNTIME}" exec "${node}" apt-get update -qq
    run "${RUNTIME}" exec "${node}" apt-get install -y -qq openvswitch-switch
    run "${RUNTIME}" exec "${node}" mkdir -p /var/run/openvswitch /etc/openvswitch
    run "${RUNTIME}" exec "${node}" ovsdb-tool create /etc/openvswitch/conf.db /usr/share/openvswitch/vswitch.ovsschema
    run "${RUNTIME}" exec "${node}" ovsdb-server /etc/openvswitch/conf.db --remote=punix:/var/run/openvswitch/db.sock --pidfile --detach --log-file
    run "${RUNTIME}" exec "${node}" ovs-vsctl --no-wait init
    run "${RUNTIME}" exec "${node}" ovs-vswitchd --pidfile --detach --log-file
  fi
}

main() {
  if [[ "${DRY_RUN}" != "1" ]]; then
    require_tools
  fi
  trap cleanup EXIT
  write_kind_config

  log "creating kind cluster ${CLUSTER} (1 control-plane + 2 workers)"
  run kind create cluster --name "${CLUSTER}" --config "${KIND_CONFIG}" --kubeconfig "${KUBECONFIG}" --wait 180s

  log "building ${IMAGE} with ${RUNTIME}"
  run "${RUNTIME}" build -t "${IMAGE}" -f Containerfile .
  if [[ "${RUNTIME}" == "podman" ]]; then
    run podman save -o "${WORKDIR}/image.tar" "${IMAGE}"
    run kind load image-archive "${WORKDIR}/image.tar" --name "${CLUSTER}"
  else
    run kind load docker-image "${IMAGE}" --name "${CLUSTER}"
  fi

  log "preparing test NICs in the kind nodes"
  E2E_VLAN=1
  local node
  while read -r node; do
    prepare_node "${node}"
  done < <(cluster_nodes)
  export E2E_VLAN E2E_KIND_OVS

  log "deploying the agent (with manifests/components/control-plane)"
  write_install_kustomization
  run kubectl apply -k "${INSTALL_DIR}"
  # The admission policies, as a cluster should run them (README "Privileges"): their params
  # include HostNetworkTemplates, so the CRD must be served first.
  run kubectl wait --for condition=established --timeout=60s \
    crd/hostnetworktemplates.plumber.k8s.pf9.io
  run kubectl apply -k manifests/admission/
  run kubectl -n "${NAMESPACE}" patch daemonset "${DAEMONSET}" --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/spec/template/spec/containers/0/args/-\",\"value\":\"--sysfs-root=${EMPTY_SYSFS}\"}]"
  run kubectl -n "${NAMESPACE}" rollout status "daemonset/${DAEMONSET}" --timeout="${ROLLOUT_TIMEOUT}"

  log "running the e2e scenarios (E2E_VLAN=${E2E_VLAN}, E2E_KIND_OVS=${E2E_KIND_OVS})"
  # shellcheck disable=SC2086  # PYTEST_ARGS is a list of words on purpose
  run env E2E_TARGET=kind "${PYTHON}" -m pytest -q tests/e2e ${PYTEST_ARGS:-}
}

main "$@"

"""LOCAL target: N simulated nodes on this one machine, each with its own agent process.

Why: the scenarios need several *real* agents (separate processes, real netlink, real userspace
OVS, a kernel-like SR-IOV sysfs) against an API server, and CI has neither hardware nor a cluster.
Each simulated node gets:

- a network namespace holding veth "NICs" named like the seed (eno1, eno2 -- i40e 8086:1572 at
  0000:01:00.0/.1, VFs at 0000:02:02.N / 0000:02:0a.N -- and an 8086:1528 card enp3s0f0/enp3s0f1
  at 0000:03:00.0/.1). The other veth ends live in a per-node "wire" namespace, so the node's
  namespace shows exactly the NICs, like a real host;
- its own emulated SR-IOV sysfs (tests/sriov_emu, FUSE, one process per node) whose PF netdev
  names match those veths, so SR-IOV discovery and netlink see one consistent host;
- its own userspace Open vSwitch running inside its namespace (tests/helpers/ovs.py);
- its own state dir (the agent's ownership ledger) and its own `plumber-agent run` process.

The API server is the one named by $KUBECONFIG, or else the in-repo fake API server, started here.
Node objects are created for the simulated nodes. Everything is torn down in reverse order by an
ExitStack, even when start-up fails half way; agent logs stay readable until then.

Node names are the seed README's node names (IP addresses), so example 05 (nodeSelector
kubernetes.io/hostname: 10.128.237.204) selects the first simulated node exactly as written.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Optional

from tests.e2e.cluster import (AGENT_START_TIMEOUT_S, BRIDGE_VLAN_FILTERING_MISSING, Capabilities,
                               Cluster, HostChanging, kernel_has_feature,
                               HostCommandError, KubeApi, NodeHost, PfLayout)
from tests.helpers.agent_env import REPO_ROOT, agent_env
from tests.helpers.netns import ip, ip_json, netns, privileged_skip_reason
from tests.helpers.ports import free_port
from tests.helpers.wait import wait_for

NODES_ENV = "E2E_NODES"
AGENT_COMMAND_ENV = "E2E_AGENT_COMMAND"
DEFAULT_NODES = 3
SEED_NODE_NAMES = ("10.128.237.204", "145.40.65.95", "139.178.64.179", "145.40.78.131",
                   "145.40.88.37", "147.75.38.91")
NIC_NAMES = ("eno1", "eno2", "enp3s0f0", "enp3s0f1")
AGENT_STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 30.0
FAKE_API_TOKEN = "e2e-token"
# The PF layout of every simulated node: (ifname, pci, vendor, device, driver, total, VF device,
# VF driver, first VF address, VF stride, VFs enabled at start). eno2 starts with 8 VFs like the
# node in the seed README, so "numVfs returns to what it was" is tested from a non-zero value.
PF_TABLE = (
    ("eno1", "0000:01:00.0", "8086", "1572", "i40e", 64, "154c", "i40evf", "0000:02:02.0", 1, 0),
    ("eno2", "0000:01:00.1", "8086", "1572", "i40e", 64, "154c", "i40evf", "0000:02:0a.0", 1, 8),
    ("enp3s0f0", "0000:03:00.0", "8086", "1528", "ixgbe", 63, "1515", "ixgbevf", "0000:04:10.0", 2, 0),
    ("enp3s0f1", "0000:03:00.1", "8086", "1528", "ixgbe", 63, "1515", "ixgbevf", "0000:04:10.1", 2, 0),
)


def node_names(count: int) -> list[str]:
    names = list(SEED_NODE_NAMES[:count])
    names += [f"e2e-node-{i}" for i in range(len(names), count)]
    return names


def node_mac(node_index: int, nic_index: int) -> str:
    # The seed's b4:96:91:70:19:38 family, unique per node and NIC.
    return f"b4:96:91:{node_index:02x}:{nic_index:02x}:38"


def default_node_count() -> int:
    """$E2E_NODES, else 3; inside the full-kernel VM (slow TCG emulation) 1."""
    if os.environ.get(NODES_ENV):
        return int(os.environ[NODES_ENV])
    return 1 if os.environ.get("PLUMBER_IN_VM") == "1" else DEFAULT_NODES


_kernel_has = kernel_has_feature


def local_skip_reason() -> Optional[str]:
    """Why the LOCAL target cannot run here (None when it can)."""
    reason = privileged_skip_reason()
    if reason:
        return f"e2e-local {reason}"
    return None


def _kernel_feature(feature: str, missing: str) -> tuple[bool, str]:
    """(the running kernel has `feature`, why not) through the full-kernel tier's probe."""
    try:
        from tests.fullkernel.vm import kernel_has
        if kernel_has(feature):
            return True, ""
    except Exception as exc:  # the probe module is optional
        return False, f"could not probe for {feature}: {exc}"
    return False, missing


def _vlan_supported() -> tuple[bool, str]:
    return _kernel_feature("vlan", "this kernel has no 802.1Q VLAN support (module 8021q)")


def _bond_supported() -> tuple[bool, str]:
    return _kernel_feature("bond", "this kernel has no bonding support (module bonding)")


class AgentExited(RuntimeError):
    """The agent process ended while we waited for it to become ready."""


class LocalNode(NodeHost):
    """One simulated node: namespace + wire namespace + emulated sysfs + OVS + agent process."""

    def __init__(self, *, name: str, index: int, workdir: Path, kubeconfig: str,
                 stack: contextlib.ExitStack, use_sysfs: bool, use_ovs: bool) -> None:
        self.name = name
        self.index = index
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.nics = list(NIC_NAMES)
        self.pfs: list[PfLayout] = []
        self.sysfs = None
        self.ovs = None
        self.proc: Optional[subprocess.Popen] = None
        # Appended to every `plumber-agent run` (e.g. short rollout lease durations in tests).
        self.extra_agent_args: list[str] = []
        self.starts = 0
        self.state_dir = workdir / "state"
        self.log_path = workdir / "agent.log"
        self.metrics_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)

        self.netns = stack.enter_context(netns())
        self.wire_netns = stack.enter_context(netns())
        for nic_index, nic in enumerate(self.nics):
            peer = f"w{nic_index}"
            ip(self.netns, "link", "add", "name", nic, "address", node_mac(index, nic_index),
               "type", "veth", "peer", "name", peer)
            ip(self.netns, "link", "set", peer, "netns", self.wire_netns)
            ip(self.wire_netns, "link", "set", peer, "up")
            ip(self.netns, "link", "set", nic, "up")

        if use_sysfs:
            from tests.sriov_emu import PfSpec, emulated_sysfs
            specs = []
            for nic_index, row in enumerate(PF_TABLE):
                (ifname, pci, vendor, device, driver, total, vf_device, vf_driver, vf_base,
                 stride, num_vfs) = row
                specs.append(PfSpec(pci, ifname, vendor=vendor, device=device, driver=driver,
                                    total_vfs=total, vf_device=vf_device, vf_driver=vf_driver,
                                    vf_pci_base=vf_base, vf_stride=stride, num_vfs=num_vfs,
                                    mac=node_mac(index, nic_index)))
                self.pfs.append(PfLayout(ifname, pci, vendor, device, total))
            self.sysfs = stack.enter_context(emulated_sysfs(workdir, "empty", pfs=specs))
            self.sysfs_root = self.sysfs.root
        else:
            self.sysfs_root = str(workdir / "no-sysfs")  # an empty tree: no PFs to find
            os.makedirs(self.sysfs_root, exist_ok=True)

        if use_ovs:
            from tests.helpers.ovs import userspace_ovs
            self.ovs = stack.enter_context(userspace_ovs(workdir / "ovs", self.netns,
                                                         skip_missing=False))
            self.ovsdb = self.ovs.db
        else:
            self.ovsdb = f"unix:{workdir / 'no-ovs' / 'db.sock'}"  # nothing listens: OVS absent
        stack.callback(self.stop_agent)

    # -- host reads --------------------------------------------------------------------------
    def run(self, argv: list[str], *, check: bool = True) -> str:
        full = ["ip", "netns", "exec", self.netns, *argv]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False)
        if check and proc.returncode != 0:
            raise HostCommandError(f"{full} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def ip_json(self, *args: str) -> list:
        return ip_json(self.netns, *args)

    def _sysfs_read(self, *parts: str) -> Optional[str]:
        if self.sysfs is None:
            return None
        try:
            return self.sysfs.read(*parts).strip()
        except OSError:
            return None

    def num_vfs(self, pci_addr: str) -> Optional[int]:
        text = self._sysfs_read("bus", "pci", "devices", pci_addr, "sriov_numvfs")
        return int(text) if text is not None and text.isdigit() else None

    def vf_drivers(self, pci_addr: str) -> Optional[list[Optional[str]]]:
        """Driver of each VF of a PF (by virtfnN order); None without SR-IOV."""
        if self.sysfs is None:
            return None
        dev = self.sysfs.path("bus", "pci", "devices", pci_addr)
        try:
            entries = sorted((e for e in os.listdir(dev) if e.startswith("virtfn")),
                             key=lambda e: int(e[len("virtfn"):]))
        except OSError:
            return None
        out = []
        for entry in entries:
            link = os.path.join(dev, entry, "driver")
            try:
                out.append(os.path.basename(os.readlink(link)))
            except OSError:
                if not os.path.lexists(os.path.join(dev, entry)):
                    # The agent removed VFs between listdir and readlink: read again.
                    raise HostChanging(f"{pci_addr}: {entry} vanished while its driver "
                                       "was read") from None
                out.append(None)  # a VF bound to no driver
        return out

    def ovs_vsctl(self, *args: str) -> Optional[str]:
        if self.ovs is None:
            return None
        return self.ovs.vsctl(*args).stdout

    def pause_sriov(self, paused: bool) -> bool:
        """Park newly enabled VFs (emulator knob hold_vfs): a deterministic mid-apply state."""
        if self.sysfs is None:
            return False
        self.sysfs.set_knobs(hold_vfs=paused)
        return True

    def sysfs_writes(self, attr: str) -> list[dict]:
        return self.sysfs.writes(attr) if self.sysfs is not None else []

    # -- the agent process -------------------------------------------------------------------
    def agent_argv(self) -> list[str]:
        # $E2E_AGENT_COMMAND replaces `python -m plumber_agent` (e.g. to run under coverage).
        prefix = shlex.split(os.environ.get(AGENT_COMMAND_ENV, "")) or [sys.executable, "-m", "plumber_agent"]
        return [*prefix, "--log-format", "json", "run",
                "--node-name", self.name, "--kubeconfig", self.kubeconfig,
                "--netns", self.netns, "--sysfs-root", self.sysfs_root, "--ovsdb", self.ovsdb,
                "--state-dir", str(self.state_dir),
                "--metrics-addr", f"127.0.0.1:{self.metrics_port}", *self.extra_agent_args]

    def start_agent(self) -> None:
        env = agent_env(drop=("KUBECONFIG",))  # the agent gets --kubeconfig explicitly
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"----- agent start #{self.starts}: {' '.join(self.agent_argv())}\n".encode())
            log.flush()
            # Its own session: SIGKILL of the group also ends helpers it forked (pyroute2's
            # netns helper), exactly as a container runtime would.
            self.proc = subprocess.Popen(self.agent_argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=str(REPO_ROOT), env=env,
                                         start_new_session=True)

    def agent_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def agent_ready(self) -> bool:
        if not self.agent_running():  # not a "not yet": fail the wait at once
            raise AgentExited(f"agent of {self.name} exited with {self.proc and self.proc.returncode}; "
                                 f"log tail:\n{self.agent_log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except OSError as exc:
            raise AssertionError(f"/readyz of {self.name}: {exc}") from None

    def wait_agent_ready(self) -> None:
        wait_for(self.agent_ready, timeout_s=AGENT_START_TIMEOUT_S,
                 what=f"agent of {self.name} ready")

    def kill_agent(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created for it
        self.proc.wait(AGENT_STOP_TIMEOUT_S)

    def ensure_agent_running(self) -> None:
        if not self.agent_running():
            self.start_agent()
        self.wait_agent_ready()

    def stop_agent(self) -> None:
        """SIGTERM (the agent drains and exits 0), then SIGKILL of its process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(AGENT_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(AGENT_STOP_TIMEOUT_S)

    def agent_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class LocalCluster(Cluster):
    target = "local"

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.nodes: list[LocalNode] = []
        self.server = None
        self.created_nodes: list[str] = []
        self.workdir: Optional[Path] = None
        self.log_dir: Optional[Path] = None
        self.agent_args: tuple[str, ...] = ()
        self.with_ovs = True

    @classmethod
    def start(cls, *, count: Optional[int] = None, agent_args: tuple[str, ...] = (),
              ovs: bool = True) -> "LocalCluster":
        """`agent_args` are appended to every node's `plumber-agent run`; `ovs=False` leaves
        out the per-node Open vSwitch (scenarios that need none start faster on many nodes)."""
        cluster = cls()
        cluster.agent_args = tuple(agent_args)
        cluster.with_ovs = ovs
        try:
            cluster._start(count or default_node_count())
        except BaseException:
            cluster.close()
            raise
        return cluster

    def new_node(self, **kwargs) -> LocalNode:
        """One simulated node. The agent-launcher seam: tests/image overrides it to run each
        node's agent from the container image, the way the DaemonSet runs it."""
        return LocalNode(**kwargs)

    def _assert_agent_writes_not_pruned(self) -> None:
        pruned = [(r.method, r.path, w) for r in self.server.request_log
                  if r.warnings and "/hostnetworks/" in r.path for w in r.warnings]
        assert not pruned, f"a real API server would have pruned fields the agent wrote: {pruned[:5]}"

    def _start(self, count: int) -> None:
        from tests.helpers.ovs import missing_ovs_reason
        from tests.sriov_emu import fuse_unusable_reason

        # Short: OVS unix socket paths must fit in 108 bytes.
        self.workdir = Path(tempfile.mkdtemp(prefix="pe2e-"))
        self.stack.callback(shutil.rmtree, self.workdir, True)
        user_kubeconfig = os.environ.get("KUBECONFIG")
        if user_kubeconfig:
            self.kubeconfig = user_kubeconfig
        else:
            from tests.fakeapi import FakeApiServer
            self.server = FakeApiServer(token=FAKE_API_TOKEN)
            self.server.start()
            self.stack.callback(self._stop_api_server)  # the current one (see restart_api_server)
            # Runs before stop (LIFO): a status field the CRD does not know is pruned by a real
            # server without an error, so a pruned field in an agent's write fails the run here.
            self.stack.callback(self._assert_agent_writes_not_pruned)
            self.kubeconfig = self.server.kubeconfig(self.workdir / "kubeconfig")
        self.api = KubeApi(self.kubeconfig)
        self.stack.callback(self.api.close)

        vlan, vlan_why = _vlan_supported()
        sysfs_why = fuse_unusable_reason()
        ovs_why = missing_ovs_reason() if self.with_ovs else "Open vSwitch left out by this scenario"
        why = {}
        if not vlan:
            why["vlan"] = vlan_why
        if sysfs_why:
            why["sriov"] = sysfs_why
        if ovs_why:
            why["ovs"] = ovs_why
        system_dp = ovs_why is None and _kernel_has("ovs_datapath")
        if not system_dp:
            why["ovs_system_datapath"] = ("no openvswitch kernel module: userspace Open vSwitch "
                                          "only (datapath_type netdev)")
        bond, bond_why = _bond_supported()
        if not bond:
            why["bond"] = bond_why
        bridge_vlans = _kernel_has("bridge_vlan_filtering")
        if not bridge_vlans:
            why["bridge_vlan_filtering"] = BRIDGE_VLAN_FILTERING_MISSING
        self.caps = Capabilities(vlan=vlan, sriov=sysfs_why is None, ovs=ovs_why is None,
                                 ovs_datapath="netdev", ovs_system_datapath=system_dp,
                                 bridge_vlan_filtering=bridge_vlans, why_not=why, bond=bond)

        for index, name in enumerate(self._unique_names(node_names(count))):
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
            if self.api.get_node(name) is None:
                self.created_nodes.append(name)
            self.api.ensure_node(name, labels)
            node = self.new_node(name=name, index=index, workdir=self.workdir / f"n{index}",
                                 kubeconfig=self.kubeconfig, stack=self.stack,
                                 use_sysfs=self.caps.sriov, use_ovs=self.caps.ovs)
            node.extra_agent_args = list(self.agent_args)
            self.nodes.append(node)
        for node in self.nodes:
            node.start_agent()
        for node in self.nodes:
            node.wait_agent_ready()

    # Node names of the LocalClusters alive in this process that share one API server (the
    # KUBECONFIG mode): two agents with one --node-name are one slot holder to the API (a slot
    # of "e2e-node-3" is "mine" to both), so a second cluster, e.g. test_rollout's module
    # cluster beside the session's, must not reuse them (the likely source of issue 25's
    # "(it expires in 30.0 s)" lines: the session's agents, with 30 s slots, and the module's,
    # with 4 s, ran as the same nodes).
    _shared_names: set = set()

    def _unique_names(self, names: list[str]) -> list[str]:
        if self.server is not None:
            return names  # its own fake API server: nobody else's nodes
        out = []
        for name in names:
            unique, n = name, 1
            while unique in LocalCluster._shared_names:
                n += 1
                unique = f"{name}-c{n}"
            LocalCluster._shared_names.add(unique)
            self.stack.callback(LocalCluster._shared_names.discard, unique)
            out.append(unique)
        return out

    def _stop_api_server(self) -> None:
        self.server.stop()

    def restart_api_server(self) -> None:
        """An API server restart: the fake server leaves its port (listener closed, watches and
        connections cut) and a new one comes back on the same port with the same objects, history
        and request log, as etcd keeps the data of a real one (tests/support/cluster.py does the
        same for a single agent)."""
        if self.server is None:
            raise RuntimeError("restart_api_server needs the in-repo fake API server")
        from tests.fakeapi import FakeApiServer
        old = self.server
        port = int(old.url.rsplit(":", 1)[1])
        old.stop()
        new = FakeApiServer(token=FAKE_API_TOKEN, port=port)
        new.take_state_of(old)
        new.start()
        self.server = new

    def save_logs(self) -> Optional[Path]:
        """Copy every agent's (and emulator's) log out of the work dir before it is removed."""
        if self.workdir is None:
            return None
        dest = Path(os.environ.get("E2E_LOG_DIR") or tempfile.gettempdir()) / "plumber-e2e-logs"
        dest.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            with contextlib.suppress(OSError):
                shutil.copyfile(node.log_path, dest / f"agent-{node.name}.log")
            if node.sysfs is not None:
                with contextlib.suppress(OSError):
                    shutil.copyfile(node.sysfs.log_path, dest / f"sriov-emu-{node.name}.log")
        self.log_dir = dest
        return dest

    def close(self) -> None:
        # Objects this harness created in a cluster it did not start (the fake one goes away).
        if self.server is None and getattr(self, "api", None) is not None:
            for node in self.nodes:
                with contextlib.suppress(Exception):
                    node.stop_agent()
                with contextlib.suppress(Exception):
                    self.api.custom.delete_cluster_custom_object(
                        "plumber.k8s.pf9.io", "v1", "hostnetworks", node.name)
            for name in self.created_nodes:
                with contextlib.suppress(Exception):
                    self.api.delete_node(name)
        try:
            self.stack.close()
        except Exception as exc:  # teardown must finish; report, do not mask the test result
            print(f"e2e-local teardown: {exc}", file=sys.stderr)


def module_cluster(request, *, count: int, agent_args: tuple[str, ...], what: str,
                   ovs: bool = False, why_local: str = ""):
    """A module's own LOCAL cluster, for a module-scoped fixture to `yield from`: skipped (with
    the reason, `why_local` when another target is asked for) where the LOCAL target cannot
    run, the agents' logs saved when one of the module's tests failed, closed in any case."""
    import pytest
    if (os.environ.get("E2E_TARGET") or "local").strip().lower() != "local":
        pytest.skip(why_local or f"the {what} scenarios start their own {count}-node LOCAL "
                    "cluster")
    reason = local_skip_reason()
    if reason:
        pytest.skip(reason)
    failed_before = request.session.testsfailed
    instance = LocalCluster.start(count=count, agent_args=agent_args, ovs=ovs)
    try:
        yield instance
    finally:
        if request.session.testsfailed > failed_before:
            where = instance.save_logs()
            if where:
                print(f"\ne2e {what}: agent logs saved in {where}")
        instance.close()

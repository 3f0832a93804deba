"""The e2e harness's simulated nodes, with each node's agent run from the container image.

Why a subclass and not a second harness: the node (network namespace, emulated SR-IOV sysfs,
userspace OVS, state dir), the fake API server and every scenario step stay exactly those of
tests/e2e; only how the agent starts differs. `ImageCluster.new_node` is the harness's seam.

How the DaemonSet maps onto one simulated node (container.run_args reads the manifest):
- hostPath /sys                  -> the node's emulated sysfs tree (FUSE): its bus, class and
  devices mounted over the container's /sys (runc needs to create /sys/fs/cgroup, which the
  emulated tree cannot hold; on a real node the host's /sys has it);
- hostPath /var/run/openvswitch  -> the run directory of the node's userspace OVS (db.sock);
- hostPath /var/lib/plumber-agent -> the node's state dir (the ledger);
- hostNetwork                    -> `--network host`; securityContext.privileged -> --privileged;
- env NODE_NAME (fieldRef spec.nodeName) -> the node's name;
- the service account a pod gets: token + ca.crt + namespace mounted at
  /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT naming the fake
  API server's HTTPS listener, so the agent uses its in-cluster configuration.
Two test-only arguments are appended to the manifest's args: `--netns NAME` (the node's
namespace, bind-mounted into the container; on a real node hostNetwork is the host itself) and
`--metrics-addr 127.0.0.1:PORT` and `--health-addr 127.0.0.1:PORT` (the manifest's fixed ports
10381 and 10380 would collide between nodes and test runs on one machine; argparse takes the
last value).
"""
from __future__ import annotations

import contextlib
import os
import subprocess

from tests.e2e.harness import AGENT_STOP_TIMEOUT_S, LocalCluster, LocalNode
from tests.helpers.ports import free_port
from tests.image.container import (SERVICE_ACCOUNT_DIR, TEST_IMAGE, AgentPod, load_agent_pod,
                                   podman, podman_argv, run_args, ulimit_args)

NETNS_RUN_DIR = "/run/netns"


class ImageNode(LocalNode):
    """A simulated node whose agent is `podman run IMAGE` built from the DaemonSet."""

    def __init__(self, *, image: str, server, pod: AgentPod, **kwargs) -> None:
        if server is None:
            raise RuntimeError("the image e2e runs against the in-repo fake API server; "
                               "unset KUBECONFIG")
        self.image = image
        self.server = server
        self.pod = pod
        super().__init__(**kwargs)
        self.container_name = f"plumber-image-e2e-{os.getpid()}-{self.index}"
        self.health_port = free_port()  # the probes' port: only kept apart from other nodes'
        self.service_account = self.workdir / "serviceaccount"
        self._write_service_account()

    def _write_service_account(self) -> None:
        url = self.server.start_tls_listener()  # in-cluster config is https only
        self.api_host, self.api_port = url.removeprefix("https://").rsplit(":", 1)
        self.service_account.mkdir(parents=True, exist_ok=True)
        (self.service_account / "token").write_text(self.server.token or "")
        (self.service_account / "ca.crt").write_bytes(self.server.ca_pem)
        (self.service_account / "namespace").write_text(self.pod.namespace)

    def host_paths(self) -> dict[str, str]:
        """The DaemonSet's hostPaths -> this node's simulated counterparts."""
        modules = self.workdir / "lib-modules"  # the emulated node's kernel modules: none known
        modules.mkdir(parents=True, exist_ok=True)
        return {"/sys": self.sysfs_root,
                "/var/run/openvswitch": str(self.ovs.dir if self.ovs else self.workdir / "no-ovs"),
                "/var/lib/plumber-agent": str(self.state_dir),
                "/lib/modules": str(modules)}

    def agent_argv(self) -> list[str]:
        options, argv = run_args(
            self.pod, host_paths=self.host_paths(),
            field_refs={"spec.nodeName": self.name, "metadata.namespace": "plumber-system"},
            split_mounts=frozenset({"/sys"}),
            extra_mounts=((str(self.service_account), SERVICE_ACCOUNT_DIR, True),
                          (f"{NETNS_RUN_DIR}/{self.netns}", f"{NETNS_RUN_DIR}/{self.netns}", False)),
            extra_env={"KUBERNETES_SERVICE_HOST": self.api_host,
                       "KUBERNETES_SERVICE_PORT": self.api_port})
        return [*podman_argv(), "run", "--name", self.container_name, *ulimit_args(), *options,
                self.image, *argv,
                "--netns", self.netns, "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
                "--health-addr", f"127.0.0.1:{self.health_port}"]

    def _remove_container(self) -> None:
        podman("rm", "--force", "--ignore", self.container_name, check=False)

    def start_agent(self) -> None:
        self._remove_container()  # a container left by a killed run of this node
        self.starts += 1
        argv = self.agent_argv()
        with open(self.log_path, "ab") as log:
            log.write(f"----- agent start #{self.starts}: {' '.join(argv)}\n".encode())
            log.flush()
            # `podman run` stays attached: the agent's output goes to the log, and the process
            # ends when the container does.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_client(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(AGENT_STOP_TIMEOUT_S)

    def kill_agent(self) -> None:
        """SIGKILL inside the container, as a node losing the pod abruptly."""
        if not self.agent_running():
            return
        podman("kill", "--signal", "KILL", self.container_name, check=False)
        self._wait_client()

    def stop_agent(self) -> None:
        """`podman stop` (SIGTERM, the agent drains; SIGKILL after the grace period), then rm."""
        if self.proc is None:
            return
        if self.agent_running():
            podman("stop", "--time", str(int(AGENT_STOP_TIMEOUT_S)), self.container_name,
                   timeout_s=AGENT_STOP_TIMEOUT_S * 3, check=False)
        self._wait_client()
        self._remove_container()
        if self.proc.poll() is None:  # the client outlived its container: end it
            self.proc.kill()
            self._wait_client()


class ImageCluster(LocalCluster):
    """LocalCluster whose nodes run their agent from `image` (see module docstring)."""

    def __init__(self, image: str = TEST_IMAGE) -> None:
        super().__init__()
        self.image = image
        self.pod = load_agent_pod()

    @classmethod
    def start_with_image(cls, *, image: str, count: int = 1) -> "ImageCluster":
        cluster = cls(image)
        try:
            cluster._start(count)
        except BaseException:
            cluster.close()
            raise
        return cluster

    def new_node(self, **kwargs) -> LocalNode:
        return ImageNode(image=self.image, server=self.server, pod=self.pod, **kwargs)

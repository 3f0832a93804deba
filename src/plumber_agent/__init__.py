"""HostPlumber node agent: configures a Kubernetes node's networking from HostNetworkTemplates
and publishes what the node has as its HostNetwork."""

GROUP = "plumber.k8s.pf9.io"
VERSION = "v1"
__version__ = "0.1.0"

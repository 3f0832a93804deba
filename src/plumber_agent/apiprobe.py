"""Probes run after a pass that touched the node's path to the API server: does the node still
reach what it needs? If not within --api-loss-rollback-s, the reconciler rolls the pass back.

Why configurable targets: kubernetes-nmstate probes the API server, the default gateway (ping)
and DNS after every change, and its users ask to choose them. Here each `--api-probe` is one
target and every target must answer for a probe to pass:

  api            an endpoint the agent dials answers an HTTP(S) request (GET /version, no
                 credentials, TLS not verified: any HTTP answer, a 401 or 403 included, proves
                 the path; the API server's identity is the client's business); one is enough,
                 as for the client; with no endpoint known, the agent's own API client must
                 get an answer (the default)
  tcp:HOST:PORT  a TCP connection to HOST:PORT is accepted
  dns:NAME       the node's resolver resolves NAME
  ping:ADDR      ADDR answers an ICMP echo; `ping:gateway` pings the gateway of each endpoint's
                 route (an endpoint on the node's own subnet has none, and is left out)

Each attempt is bounded by PROBE_TIMEOUT_S; `rollback.wait_for_api` repeats the probe until it
passes or the deadline is over. Targets are validated when the command line is read
(`parse_target`), never at the moment a probe is needed.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import select
import socket
import ssl
import struct
import threading
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Callable, Iterable, Optional

from plumber_agent.clock import RealClock
from plumber_agent.models.plan import ApiEndpoint
from plumber_agent.validation import check_hostname_or_ip

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
"""One attempt of one target: a healthy API server, resolver or gateway answers in
milliseconds; the rollback deadline (tens of seconds) gives many attempts."""
DEFAULT_TARGETS = ("api",)
API_PROBE_PATH = "/version"  # readable without credentials (system:public-info-viewer)
KINDS = ("api", "tcp", "dns", "ping")
GATEWAY = "gateway"
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129


@dataclass(frozen=True)
class ProbeTarget:
    kind: str  # one of KINDS
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "api":
            return "api"
        if self.kind == "tcp":
            return f"tcp:{_join_host_port(self.host, self.port)}"
        return f"{self.kind}:{self.host}"


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_target(text: str) -> ProbeTarget:
    """`api`, `tcp:HOST:PORT`, `dns:NAME`, `ping:ADDR` or `ping:gateway`; ValueError with a
    message naming what is wrong otherwise."""
    kind, _, rest = text.strip().partition(":")
    if kind == "api" and not rest:
        return ProbeTarget("api")
    if kind == "tcp":
        host, port = split_host_port(rest, what=f"probe {text!r}")
        return ProbeTarget("tcp", host, port)
    if kind == "dns" and rest:
        problem = check_hostname_or_ip(rest)
        if problem:
            raise ValueError(f"probe {text!r}: {problem}")
        return ProbeTarget("dns", rest)
    if kind == "ping" and rest:
        if rest == GATEWAY:
            return ProbeTarget("ping", GATEWAY)
        try:
            return ProbeTarget("ping", ipaddress.ip_address(rest).compressed)
        except ValueError:
            raise ValueError(f"probe {text!r}: ping needs an IP address or 'gateway'") from None
    raise ValueError(f"probe {text!r}: expected api, tcp:HOST:PORT, dns:NAME, ping:ADDR or "
                     "ping:gateway")


def split_host_port(text: str, *, what: str, default_port: Optional[int] = None
                    ) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT, or (with a default port) HOST or a bare IPv6 address."""
    host, port_text = text, ""
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise ValueError(f"{what}: expected [IPv6]:PORT")
        port_text = tail[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1 and default_port is None:
        raise ValueError(f"{what}: write an IPv6 address as [ADDR]:PORT")
    if not port_text:
        if default_port is None:
            raise ValueError(f"{what}: a port is needed (HOST:PORT)")
        port = default_port
    else:
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"{what}: port {port_text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: port {port} is not in 1..65535")
    problem = check_hostname_or_ip(host)
    if problem:
        raise ValueError(f"{what}: {problem}")
    return host, port


class Probe:
    """The callable the reconciler arms: True when every target answers now."""

    def __init__(self, targets: Iterable[ProbeTarget], *,
                 endpoints: Callable[[], list[ApiEndpoint]],
                 gateways: Callable[[], list[str]] = lambda: [],
                 client: Optional[Callable[[], bool]] = None,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        """`endpoints()`: what the agent dials now; `gateways()`: the gateways of their routes
        (before the pass); `client`: the agent's own API request (cluster mode)."""
        self.targets = list(targets) or [parse_target(t) for t in DEFAULT_TARGETS]
        self.endpoints, self.gateways, self.client = endpoints, gateways, client
        self.timeout_s = timeout_s
        self.last_failure: Optional[str] = None

    def __call__(self) -> bool:
        for target in self.targets:
            problem = self._check(target)
            if problem is not None:
                self.last_failure = f"{target}: {problem}"
                log.info("API probe failed: %s", self.last_failure)
                return False
        self.last_failure = None
        return True

    def _check(self, target: ProbeTarget) -> Optional[str]:
        """None when `target` answered, else what went wrong."""
        if target.kind == "api":
            endpoints = self.endpoints()
            if not endpoints:
                if self.client is None or self.client():
                    return None
                return "the API server does not answer the agent's client"
            problems = []
            for endpoint in endpoints:  # the client reaches the API through any of them
                problem = http_answers(endpoint, timeout_s=self.timeout_s)
                if problem is None:
                    return None
                problems.append(problem)
            return "; ".join(problems)
        if target.kind == "tcp":
            return tcp_accepts(target.host, target.port, timeout_s=self.timeout_s)
        if target.kind == "dns":
            return resolves(target.host, timeout_s=self.timeout_s)
        addresses = self.gateways() if target.host == GATEWAY else [target.host]
        for address in addresses:
            problem = ping(address, timeout_s=self.timeout_s)
            if problem:
                return problem
        return None


def http_answers(endpoint: ApiEndpoint, *, timeout_s: float) -> Optional[str]:
    """Any HTTP answer from GET /version on the endpoint (its certificate is not checked:
    this proves the path, not who answers)."""
    where = f"{endpoint.scheme}://{_join_host_port(endpoint.ip, endpoint.port)}"
    if endpoint.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: HTTPConnection = HTTPSConnection(endpoint.ip, endpoint.port, timeout=timeout_s,
                                               context=context)
    else:
        conn = HTTPConnection(endpoint.ip, endpoint.port, timeout=timeout_s)
    try:
        conn.request("GET", API_PROBE_PATH, headers={"Accept": "application/json"})
        conn.getresponse().read(4096)
        return None
    except (OSError, HTTPException) as exc:
        return f"{where} does not answer ({exc or type(exc).__name__})"
    finally:
        conn.close()


def tcp_accepts(host: str, port: int, *, timeout_s: float) -> Optional[str]:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"no TCP connection to {_join_host_port(host, port)} ({exc})"


def resolves(name: str, *, timeout_s: float) -> Optional[str]:
    """getaddrinfo cannot be interrupted: it runs on a daemon thread we stop waiting for."""
    answer: dict = {}

    def lookup() -> None:
        try:
            answer["found"] = bool(socket.getaddrinfo(name, None))
        except OSError as exc:
            answer["error"] = exc
    thread = threading.Thread(target=lookup, name="dns-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if answer.get("found"):
        return None
    if "error" in answer:
        return f"{name} does not resolve ({answer['error']})"
    return f"{name} does not resolve within {timeout_s:g} s"


def ping(address: str, *, timeout_s: float) -> Optional[str]:
    """One ICMP (or ICMPv6) echo over a raw socket (the agent runs as root; no `ping` binary
    is needed in the image)."""
    ip = ipaddress.ip_address(address)
    v6 = ip.version == 6
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (socket.AF_INET,
                                                                          socket.IPPROTO_ICMP)
    ident, seq = os.getpid() & 0xFFFF, int.from_bytes(os.urandom(2), "big")
    body = b"plumber-probe"
    request_type = ICMPV6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
    header = struct.pack("!BBHHH", request_type, 0, 0, ident, seq)
    checksum = 0 if v6 else _checksum(header + body)  # the kernel fills ICMPv6's
    packet = struct.pack("!BBHHH", request_type, 0, checksum, ident, seq) + body
    try:
        with socket.socket(family, socket.SOCK_RAW, proto) as sock:
            sock.sendto(packet, (ip.compressed, 0))
            clock = RealClock()  # one bounded kernel wait, like the host drivers'
            end = clock.monotonic() + timeout_s
            while (left := end - clock.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                data, peer = sock.recvfrom(2048)
                if ipaddress.ip_address(peer[0].split("%")[0]) != ip:
                    continue
                icmp = data if v6 else data[(data[0] & 0x0F) * 4:]  # IPv4 raw: IP header first
                if len(icmp) < 8:
                    continue
                kind, _code, _sum, got_id, got_seq = struct.unpack("!BBHHH", icmp[:8])
                if kind == (ICMPV6_ECHO_REPLY if v6 else ICMP_ECHO_REPLY) and \
                        (got_id, got_seq) == (ident, seq):
                    return None
    except OSError as exc:
        return f"cannot ping {address} ({exc})"
    return f"{address} does not answer a ping within {timeout_s:g} s"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


# -- the endpoints the agent dials ----------------------------------------------------------

DEFAULT_PORTS = {"https": 443, "http": 80}


def endpoints_from_url(url: str, *, origin: str = "kubeconfig") -> list[ApiEndpoint]:
    """Every address the server of `url` resolves to (the client may dial any of them); []
    when it does not resolve now (nothing to guard: the agent has no path to keep)."""
    from urllib.parse import urlparse
    parsed = urlparse(url)
    scheme = parsed.scheme or "https"
    try:
        port = parsed.port or DEFAULT_PORTS.get(scheme, 443)
    except ValueError:
        return []
    if not parsed.hostname:
        return []
    try:
        infos = socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("API server %s does not resolve (%s): its path is not guarded", url, exc)
        return []
    ips = dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]).compressed
                        for info in infos)
    return [ApiEndpoint(ip=ip, port=port, origin=origin, scheme=scheme) for ip in ips]


def parse_endpoint(text: str) -> list[ApiEndpoint]:
    """--api-endpoint: a URL (https://HOST:PORT), or HOST[:PORT] (https, port 443); a host
    name is resolved. ValueError with a message when it is malformed."""
    if "://" in text:
        from urllib.parse import urlparse
        parsed = urlparse(text)
        if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname:
            raise ValueError(f"--api-endpoint {text!r}: expected https://HOST[:PORT] or "
                             "HOST[:PORT]")
        split_host_port(parsed.netloc.rpartition("@")[2], what=f"--api-endpoint {text!r}",
                        default_port=DEFAULT_PORTS[parsed.scheme])
        return endpoints_from_url(text, origin="flag")
    host, port = split_host_port(text, what=f"--api-endpoint {text!r}", default_port=443)
    return endpoints_from_url(f"https://{_join_host_port(host, port)}", origin="flag")


KUBERNETES_SLICE_NAMESPACE = "default"
KUBERNETES_SLICE_NAME = "kubernetes"  # the API server's own EndpointSlice (its endpoint reconciler's)


def endpoints_from_slices(slices: Iterable[dict]) -> list[ApiEndpoint]:
    """The addresses of the `kubernetes` EndpointSlice(s), the ones a pod's client reaches
    through the Service: ready (or not known not ready) endpoints, at the `https` port."""
    out: list[ApiEndpoint] = []
    for obj in slices:
        if not isinstance(obj, dict):
            continue
        ports = [p for p in obj.get("ports") or [] if isinstance(p, dict)
                 and isinstance(p.get("port"), int)]
        port = next((p["port"] for p in ports if p.get("name") == "https"),
                    ports[0]["port"] if ports else DEFAULT_PORTS["https"])
        for endpoint in obj.get("endpoints") or []:
            if not isinstance(endpoint, dict) or \
                    (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                try:
                    ip = ipaddress.ip_address(address).compressed
                except (TypeError, ValueError):
                    continue  # an FQDN slice (addressType FQDN) names no path to guard
                out.append(ApiEndpoint(ip=ip, port=port, origin="endpointslice"))
    return list(dict.fromkeys(out))

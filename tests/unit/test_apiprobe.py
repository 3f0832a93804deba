"""The API probe's targets (plumber_agent/apiprobe.py): validated when the command line is read,
and the `api` target accepting any HTTP(S) answer from a real server on loopback (a 404 or 401
proves the path as well as a 200). Pings and the uplink are in tests/faults/test_api_path.py."""
from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from plumber_agent.apiprobe import (Probe, http_answers, parse_endpoint, parse_target,
                                    tcp_accepts)
from plumber_agent.models.plan import ApiEndpoint


@pytest.mark.parametrize("text,expected", [
    ("api", "api"), ("tcp:10.0.0.1:6443", "tcp:10.0.0.1:6443"),
    ("tcp:[fd00::1]:443", "tcp:[fd00::1]:443"), ("tcp:api.example.com:443",
                                                 "tcp:api.example.com:443"),
    ("dns:kubernetes.default.svc.cluster.local", "dns:kubernetes.default.svc.cluster.local"),
    ("ping:10.0.0.1", "ping:10.0.0.1"), ("ping:gateway", "ping:gateway"),
    ("ping:FD00:0::1", "ping:fd00::1"),
])
def test_valid_targets(text, expected):
    assert str(parse_target(text)) == expected


@pytest.mark.parametrize("text,message", [
    ("", "expected api, tcp:HOST:PORT"), ("api:x", "expected api"), ("http:x", "expected"),
    ("tcp:10.0.0.1", "a port is needed"), ("tcp:10.0.0.1:0", "not in 1..65535"),
    ("tcp:10.0.0.1:http", "is not a number"), ("tcp:fd00::1:443", "[ADDR]:PORT"),
    ("tcp:a b:1", "neither an IP address nor a host name"), ("dns:", "expected"),
    ("dns:;reboot", "neither"), ("ping:host.example", "IP address or 'gateway'"),
])
def test_invalid_targets_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=None) as err:
        parse_target(text)
    assert message in str(err.value) and repr(text) in str(err.value)


def test_endpoints_from_the_command_line():
    assert parse_endpoint("10.0.0.1") == [ApiEndpoint("10.0.0.1", 443, "flag")]
    assert parse_endpoint("https://[fd00::1]:6443") == [ApiEndpoint("fd00::1", 6443, "flag")]
    assert parse_endpoint("http://127.0.0.1:8080") == [
        ApiEndpoint("127.0.0.1", 8080, "flag", scheme="http")]
    for bad in ("ftp://x", "10.0.0.1:99999", "a b"):
        with pytest.raises(ValueError, match="--api-endpoint"):
            parse_endpoint(bad)


class Answer401(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = HTTPServer(("127.0.0.1", 0), Answer401)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_api_target_accepts_any_http_answer(http_server):
    up = ApiEndpoint("127.0.0.1", http_server, scheme="http")
    down = ApiEndpoint("127.0.0.1", free_port(), scheme="http")
    assert http_answers(up, timeout_s=2.0) is None  # a 401 proves the path
    assert "does not answer" in http_answers(down, timeout_s=2.0)
    # One answering endpoint is enough (the client reaches the API through any of them).
    assert Probe([parse_target("api")], endpoints=lambda: [down, up], timeout_s=2.0)()
    probe = Probe([parse_target("api")], endpoints=lambda: [down, down], timeout_s=2.0)
    assert probe() is False and probe.last_failure.startswith("api: http://127.0.0.1:")
    assert Probe([], endpoints=lambda: [up], timeout_s=2.0)()  # `api` is the default


def test_https_without_tls_on_the_other_end_is_no_answer(http_server):
    """An HTTPS probe of a plain HTTP server fails the handshake: not an API server answer."""
    assert http_answers(ApiEndpoint("127.0.0.1", http_server), timeout_s=2.0)


def test_without_endpoints_the_agents_own_client_decides():
    assert Probe([], endpoints=lambda: [], client=lambda: True)()
    probe = Probe([], endpoints=lambda: [], client=lambda: False)
    assert not probe() and "agent's client" in probe.last_failure


def test_tcp_target(http_server):
    assert tcp_accepts("127.0.0.1", http_server, timeout_s=2.0) is None
    assert "no TCP connection" in tcp_accepts("127.0.0.1", free_port(), timeout_s=2.0)


def test_the_agent_guards_what_it_dials(tmp_path):
    """agent._api_guard: in a pod the slice's addresses (the Service IP until it is listed),
    else the kubeconfig's server; --api-endpoint always; in local mode nothing unless told."""
    import argparse

    from plumber_agent.agent import _api_guard
    def args(**kw):
        return argparse.Namespace(**{"api_endpoint": None, "kubeconfig": None, "api_probe": None,
                                     **kw})
    flag = [parse_endpoint("192.0.2.7:6443")]
    slices: list = []
    endpoints, probe = _api_guard(args(api_endpoint=flag), api_url="https://10.96.0.1:443",
                                  client_probe=lambda: True,
                                  slices=lambda: slices)
    assert [e.ip for e in endpoints()] == ["192.0.2.7", "10.96.0.1"]  # not listed yet
    slices.append(ApiEndpoint("10.0.0.5", 6443, "endpointslice"))
    assert [e.ip for e in endpoints()] == ["192.0.2.7", "10.0.0.5"]
    assert probe is not None
    endpoints, probe = _api_guard(args(), api_url=None, client_probe=None)
    assert endpoints() == [] and probe is None  # local mode, nothing given: no guard
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                          "clusters: [{name: k, cluster: {server: 'https://192.0.2.9:6443'}}]\n"
                          "contexts: [{name: c, context: {cluster: k}}]\n")
    endpoints, probe = _api_guard(args(kubeconfig=str(kubeconfig)), api_url=None,
                                  client_probe=None)
    assert endpoints() == [ApiEndpoint("192.0.2.9", 6443, "kubeconfig")] and probe is not None

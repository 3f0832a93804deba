"""A throw-away self-signed certificate for the fake API server's HTTPS listener.

Why HTTPS at all: kubectl (client-go's clientcmd) only attaches the kubeconfig's credentials
when the transport is TLS, so over plain http it sends no bearer token and the fake answers 401
as a real server would. The certificate is the agent's own self-signed one
(plumber_agent.host.tlscert, made with the `openssl` CLI), valid for 127.0.0.1/::1/localhost
only, and its key never leaves memory longer than loading it takes.
"""
from __future__ import annotations

import ssl
import subprocess

from plumber_agent.host.tlscert import context_from_pem, self_signed_pem

CERT_DAYS = 2


class TlsUnavailable(RuntimeError):
    """No `openssl` binary to make a certificate with."""


def self_signed_context() -> tuple[ssl.SSLContext, bytes]:
    """(server SSLContext, certificate PEM) for a fresh self-signed EC certificate."""
    try:
        cert_pem, key_pem = self_signed_pem("fakeapi", sans=("IP:127.0.0.1", "IP:::1", "DNS:localhost"),
                                            days=CERT_DAYS, ca=True)
    except FileNotFoundError:
        raise TlsUnavailable("the openssl command is not installed; the fake API server "
                             "cannot serve HTTPS") from None
    except subprocess.SubprocessError as exc:
        raise TlsUnavailable(f"openssl failed: {exc}") from None
    return context_from_pem(cert_pem, key_pem), cert_pem

"""A throw-away self-signed certificate for the fake API server's HTTPS listener.

Why HTTPS at all: kubectl (client-go's clientcmd) only attaches the kubeconfig's credentials
when the transport is TLS, so over plain http it sends no bearer token and the fake answers 401
as a real server would. The certificate is made with the `openssl` CLI (no extra Python
dependency), is valid for 127.0.0.1/::1/localhost only, and its key never leaves memory longer
than loading it takes.
"""
from __future__ import annotations

import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

OPENSSL_TIMEOUT_S = 30.0
CERT_DAYS = 2


class TlsUnavailable(RuntimeError):
    """No `openssl` binary to make a certificate with."""


def self_signed_context() -> tuple[ssl.SSLContext, bytes]:
    """(server SSLContext, certificate PEM) for a fresh self-signed EC certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TlsUnavailable("the openssl command is not installed; the fake API server "
                             "cannot serve HTTPS")
    with tempfile.TemporaryDirectory(prefix="fakeapi-tls-") as workdir:
        cert, key = Path(workdir) / "cert.pem", Path(workdir) / "key.pem"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(CERT_DAYS),
             "-subj", "/CN=fakeapi",
             "-addext", "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
             "-addext", "basicConstraints=critical,CA:TRUE"],
            check=True, capture_output=True, timeout=OPENSSL_TIMEOUT_S)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        return context, cert.read_bytes()

"""The secured /metrics listener's certificate: from files, or self-signed at start.

As controller-runtime's metrics server: `--metrics-cert-dir DIR` holds `tls.crt` and `tls.key`
(its CertDir, CertName and KeyName defaults, what cert-manager writes into a Secret); without
one, a self-signed certificate is made at start. Prometheus then scrapes with
`insecureSkipVerify` (or the issuing CA), and the bearer token still authenticates the scraper:
TLS here keeps the token and the metrics off the wire in clear text.

The self-signed certificate is made with the `openssl` command (in the image: Debian's
ca-certificates package depends on it), so the agent needs no crypto library of its own; the key
exists on disk only in a private temporary directory while the SSL context loads it. It lives in
the host layer because that is where the agent runs commands (.importlinter).
"""
from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from typing import Optional

from plumber_agent.errors import UsageError

CERT_NAME = "tls.crt"
KEY_NAME = "tls.key"
OPENSSL_TIMEOUT_S = 30.0
SELF_SIGNED_DAYS = 365
"""The agent restarts far more often than yearly (every upgrade), and each start makes a new one."""


def self_signed_pem(common_name: str, *, sans: tuple[str, ...], days: int,
                    ca: bool = False) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): a fresh P-256 key and a self-signed certificate for `sans`
    (e.g. "IP:127.0.0.1", "DNS:localhost"). Raises FileNotFoundError without `openssl`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("the openssl command is not installed")
    with tempfile.TemporaryDirectory(prefix="plumber-tls-") as workdir:
        cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
        argv = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={common_name}"]
        if sans:
            argv += ["-addext", "subjectAltName=" + ",".join(sans)]
        if ca:
            argv += ["-addext", "basicConstraints=critical,CA:TRUE"]
        subprocess.run(argv, check=True, capture_output=True, timeout=OPENSSL_TIMEOUT_S)
        with open(cert, "rb") as cert_file, open(key, "rb") as key_file:
            return cert_file.read(), key_file.read()


def context_from_pem(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context from PEM bytes (ssl loads only files: a private temporary directory)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="plumber-tls-") as workdir:
        cert, key = os.path.join(workdir, CERT_NAME), os.path.join(workdir, KEY_NAME)
        for path, data in ((cert, cert_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert, key)
    return context


def server_context(cert_dir: Optional[str], *, node_name: str) -> ssl.SSLContext:
    """The listener's SSL context; UsageError (one line) when the files or openssl fail."""
    if cert_dir:
        cert, key = os.path.join(cert_dir, CERT_NAME), os.path.join(cert_dir, KEY_NAME)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError([f"--metrics-cert-dir {cert_dir}: cannot load {CERT_NAME} and "
                              f"{KEY_NAME}: {exc}"]) from None
        return context
    try:
        cert_pem, key_pem = self_signed_pem(
            f"plumber-agent@{node_name}", sans=(f"DNS:{node_name}", "DNS:localhost", "IP:127.0.0.1"),
            days=SELF_SIGNED_DAYS)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UsageError([f"--metrics-secure: cannot make a self-signed certificate ({exc}); "
                          "give --metrics-cert-dir with tls.crt and tls.key"]) from None
    return context_from_pem(cert_pem, key_pem)

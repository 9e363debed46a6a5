"""TLS contexts, built from PEM text: the hub's listeners (HTTPS, mqtts) and a node's client side, and the errors of TLS work."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from hark_fleet.protocol.errors import HarkError


class TlsError(HarkError):
    """Base of the errors of certificates and TLS (the CA's included)."""


BUNDLE_CERT = "CERTIFICATE"
BUNDLE_KEY = "PRIVATE KEY"


def _load_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """`load_cert_chain` reads files only: hand it a private temporary file, removed at once."""
    fd, path = tempfile.mkstemp(prefix="hark-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem + key_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)


def server_context(ca_pem: str, crl_path: Path, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A listener's context: its certificate; client certificates optional, checked against the CA and its CRL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_pem, key_pem)
    context.load_verify_locations(cadata=ca_pem)
    context.verify_mode = ssl.CERT_OPTIONAL  # people on the console have none; nodes present theirs
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    reload_crl(context, crl_path)
    return context


def reload_crl(context: ssl.SSLContext, crl_path: Path) -> None:
    """Load the CA's current CRL into a running context (the newest CRL loaded wins)."""
    context.load_verify_locations(cafile=str(crl_path))


def client_context(ca_pem: str, cert_pem: str | None = None, key_pem: str | None = None) -> ssl.SSLContext:
    """A client context trusting only `ca_pem` (pinned), presenting a client certificate when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_pem and key_pem:
        _load_chain(context, cert_pem, key_pem)
    return context


def split_bundle(bundle: str) -> tuple[str, str | None, str | None]:
    """(CA, client certificate, key) from a claim's `ca_pem`: the CA first, then the node's certificate and key."""
    blocks: list[tuple[str, str]] = []
    for chunk in bundle.split("-----END ")[:-1]:
        start = chunk.find("-----BEGIN ")
        if start < 0:
            continue
        label = chunk[start + 11 :].split("-----", 1)[0]
        end_label = f"-----END {label}-----\n"
        blocks.append((label, chunk[start:] + end_label))
    certs = [pem for label, pem in blocks if label == BUNDLE_CERT]
    keys = [pem for label, pem in blocks if label.endswith(BUNDLE_KEY)]
    if not certs:
        return bundle, None, None
    return certs[0], certs[1] if len(certs) > 1 else None, keys[0] if keys else None


def make_bundle(ca_pem: str, cert_pem: str | None = None, key_pem: str | None = None) -> str:
    """What a claim hands the node as `ca_pem`: the CA, then its certificate and key when TLS is on."""
    return "".join(p if p.endswith("\n") else p + "\n" for p in (ca_pem, cert_pem, key_pem) if p)

"""The hub's CA: created with a private key, issuing, revoking and a TLS listener refusing revoked certificates."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from hark_fleet.protocol.tls import client_context, make_bundle, reload_crl, server_context, split_bundle
from hark_fleet.provision.ca import CLIENT, SERVER, CaMissing, CertificateAuthority, CertificateNotFound
from hark_fleet.provision.revocation import is_revoked, revoke


def test_ca_is_created_once_with_its_key_readable_only_by_the_owner(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert (tmp_path / "ca" / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert CertificateAuthority.open(tmp_path).fingerprint == ca.fingerprint
    with pytest.raises(CaMissing):
        CertificateAuthority.open(tmp_path / "elsewhere", create=False)


def test_issued_certificates_are_listed_and_carry_their_names(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    server = ca.issue("hub", SERVER, ("hub.example", "127.0.0.1"))
    ca.issue("n-1", CLIENT)
    assert [(r.subject, r.kind) for r in ca.issued()] == [("hub", SERVER), ("n-1", CLIENT)]
    cert = x509.load_pem_x509_certificate(server.cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["hub.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_revoking_by_subject_lists_the_serial_in_the_crl(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    kept = ca.issue("n-1", CLIENT)
    gone = ca.issue("n-2", CLIENT)
    assert [r.serial for r in revoke(ca, "n-2")] == [gone.record.serial]
    crl = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(gone.record.serial, 16)) is not None
    assert crl.get_revoked_certificate_by_serial_number(int(kept.record.serial, 16)) is None
    assert is_revoked(ca, gone.cert_pem) and not is_revoked(ca, kept.cert_pem)
    with pytest.raises(CertificateNotFound):
        revoke(ca, "n-3")


def test_a_claim_bundle_splits_into_ca_certificate_and_key(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    node = ca.issue("n-1", CLIENT)
    assert split_bundle(make_bundle(ca.ca_pem, node.cert_pem, node.key_pem)) == (ca.ca_pem, node.cert_pem, node.key_pem)
    assert split_bundle(ca.ca_pem) == (ca.ca_pem, None, None)


def _handshake(port: int, context: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"x")
        if tls.recv(1) != b"x":
            raise ssl.SSLError("no echo")


def test_a_listener_refuses_a_client_certificate_once_it_is_revoked(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    server = ca.issue("hub", SERVER, ("localhost", "127.0.0.1"))
    node = ca.issue("n-1", CLIENT)
    listener_context = server_context(ca.ca_pem, ca.crl_path, server.cert_pem, server.key_pem)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with listener_context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(tls.recv(1))
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        node_context = client_context(ca.ca_pem, node.cert_pem, node.key_pem)
        _handshake(port, node_context)
        revoke(ca, "n-1")
        reload_crl(listener_context, ca.crl_path)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake(port, client_context(ca.ca_pem, node.cert_pem, node.key_pem))
        _handshake(port, client_context(ca.ca_pem))  # without a certificate (a browser) still served
    finally:
        stop.set()
        listener.close()
        thread.join(5)

"""Revocation: the CRL the CA publishes (`ca/crl.pem`, also Mosquitto's `crlfile`) and revoking by serial or name."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.provision.ca import CertificateAuthority, IssuedRecord

CRL_DAYS = 30
_BACKDATE = dt.timedelta(minutes=10)


def build_crl(ca: CertificateAuthority) -> x509.CertificateRevocationList:
    """A CRL listing every revoked certificate of `ca`.

    Its `last_update` grows by at least a second each time: OpenSSL picks the newest of
    several CRLs loaded into one context (the running listeners reload it that way).
    """
    now = dt.datetime.now(dt.UTC)
    last = now - _BACKDATE
    if ca.crl_path.exists():
        try:
            previous = x509.load_pem_x509_crl(ca.crl_path.read_bytes())
            last = max(last, min(previous.last_update_utc + dt.timedelta(seconds=1), now))
        except ValueError:
            pass
    number = int(last.timestamp() * 1000)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(last)
        .next_update(now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for record in ca.issued():
        if record.revoked_at:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(record.serial, 16))
                .revocation_date(dt.datetime.fromisoformat(record.revoked_at))
                .build()
            )
    return builder.sign(ca.key, hashes.SHA256())


def write_crl(ca: CertificateAuthority) -> str:
    """Rewrite `ca/crl.pem`; return it."""
    pem = build_crl(ca).public_bytes(serialization.Encoding.PEM)
    write_atomic(ca.crl_path, pem, mode=0o644)  # Mosquitto reads it, possibly as another user
    return pem.decode()


def revoke(ca: CertificateAuthority, which: str) -> list[IssuedRecord]:
    """Revoke by serial (hex) or subject (e.g. a node id) and publish the new CRL."""
    records = ca.mark_revoked(which)
    with ca.locked():  # the CRL from the index as it is now: the last one written has every hub's revocations
        write_crl(ca)
    return records


def is_revoked(ca: CertificateAuthority, cert_pem: str) -> bool:
    """Whether the certificate `cert_pem` is on the CA's revocation list."""
    serial = format(x509.load_pem_x509_certificate(cert_pem.encode()).serial_number, "x")
    return any(r.serial == serial and r.revoked_at for r in ca.issued())

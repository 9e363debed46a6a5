"""The CRL role (issue 24): the published CRL is written again before its next update passes (listeners refuse every
client certificate once it has expired), with the revocations it lists kept; a fresh CRL is left alone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from hark_fleet.hub.cluster.crl import REPUBLISH_BEFORE, republish_if_due
from hark_fleet.provision.ca import CLIENT, CertificateAuthority
from hark_fleet.provision.revocation import revoke


def load(ca: CertificateAuthority) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(ca.crl_path.read_bytes())


def test_a_crl_near_its_next_update_is_published_again_with_its_revocations(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    issued = ca.issue("nod_gone", CLIENT)
    revoke(ca, "nod_gone")
    before = load(ca)
    assert republish_if_due(ca) is False  # fresh: untouched
    assert load(ca).last_update_utc == before.last_update_utc

    later = before.next_update_utc - REPUBLISH_BEFORE + dt.timedelta(minutes=1)
    assert republish_if_due(ca, now=later) is True
    after = load(ca)
    assert after.last_update_utc > before.last_update_utc  # written again (the real clock: the same next update here)
    assert after.get_revoked_certificate_by_serial_number(x509.load_pem_x509_certificate(issued.cert_pem.encode()).serial_number)


def test_a_missing_crl_is_published(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path)
    ca.crl_path.unlink()
    assert republish_if_due(ca) is True
    assert load(ca).next_update_utc > dt.datetime.now(dt.UTC)

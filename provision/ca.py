"""The hub's CA in `<data_dir>/ca/`: its key (mode 0600) and certificate, and the certificates it issued.

Keys are EC P-256: fast to generate on a recording box and in tests. Every issued
certificate is recorded in `issued.json` (serial, subject, kind, expiry, revocation);
the CRL beside it (`crl.pem`) is rewritten on every revocation.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hark_fleet.protocol.atomic_file import write_atomic
from hark_fleet.protocol.file_lock import exclusive
from hark_fleet.protocol.tls import TlsError

CA_DIR = "ca"
CA_KEY = "ca.key"
CA_CERT = "ca.pem"
INDEX = "issued.json"
CRL = "crl.pem"
LOCK = "ca.lock"  # held to make the CA and to rewrite the index (hubs may share the data directory)
CA_DAYS = 3650
LEAF_DAYS = 825
SERVER = "server"
CLIENT = "client"


class CaMissing(TlsError):
    """There is no CA in the data directory (and it was not to be created)."""


class CertificateNotFound(TlsError):
    """No issued certificate matches the serial number or name given."""


@dataclass(frozen=True, slots=True)
class IssuedRecord:
    """One certificate the CA issued, as kept in `issued.json`."""

    serial: str  # hex
    subject: str
    kind: str  # server | client
    not_after: str
    revoked_at: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A freshly issued certificate and its private key, both PEM."""

    record: IssuedRecord
    cert_pem: str
    key_pem: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` readable only by the owner, atomically."""
    write_atomic(path, data, mode=0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class CertificateAuthority:
    """The CA's key and certificate, issuing and revoking leaf certificates."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.directory = directory
        self.key = key
        self.cert = cert

    @classmethod
    def open(cls, data_dir: Path, create: bool = True, name: str = "hark hub CA") -> CertificateAuthority:
        """The CA of `data_dir`; created there when missing and `create`; CaMissing otherwise.

        Hubs sharing the data directory may start at once: one makes the CA under the CA's lock, the others
        wait for it and read the CA it made.
        """
        directory = data_dir / CA_DIR
        if (directory / CA_KEY).exists() and (directory / CA_CERT).exists():
            return cls._load(directory)
        if not create:
            raise CaMissing(f"no CA in {directory}: run `hark-provision ca init` or start the hub once")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with exclusive(directory / LOCK):
            if (directory / CA_KEY).exists() and (directory / CA_CERT).exists():
                return cls._load(directory)
            return cls._create(directory, name)

    @classmethod
    def _load(cls, directory: Path) -> CertificateAuthority:
        key_path, cert_path = directory / CA_KEY, directory / CA_CERT
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as err:
            raise TlsError(f"cannot read the CA in {directory}: {err}") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError(f"{key_path} is not an EC key")
        return cls(directory, key, cert)

    @classmethod
    def _create(cls, directory: Path, name: str) -> CertificateAuthority:
        key_path, cert_path = directory / CA_KEY, directory / CA_CERT
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )  # key_cert_sign, crl_sign
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        ca = cls(directory, key, cert)
        _write_private(key_path, _key_pem(key))
        ca._save_index([])
        from hark_fleet.provision.revocation import write_crl  # the CRL module builds on this one

        write_crl(ca)
        # The certificate last: a CA is there once its key and certificate are (see `open`), with its index and CRL.
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return ca

    # -- the CA itself -------------------------------------------------------------------

    @property
    def ca_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate, hex, as advertised and pinned."""
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL

    # -- issuing -------------------------------------------------------------------------

    def issue(self, subject: str, kind: str, hosts: tuple[str, ...] = (), days: int = LEAF_DAYS) -> IssuedCertificate:
        """A new key and certificate for `subject` (a node id or the hub), recorded in the index."""
        if kind not in (SERVER, CLIENT):
            raise TlsError(f"unknown certificate kind {kind!r} (server or client)")
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == SERVER else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        names = list(dict.fromkeys(hosts))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        record = IssuedRecord(format(cert.serial_number, "x"), subject, kind, cert.not_valid_after_utc.isoformat())
        with self.locked():  # another hub on this data directory may be adding to the index too
            self._save_index([*self.issued(), record])
        return IssuedCertificate(record, cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key).decode())

    # -- the index -----------------------------------------------------------------------

    def issued(self) -> list[IssuedRecord]:
        """Every certificate issued, oldest first."""
        path = self.directory / INDEX
        if not path.exists():
            return []
        try:
            return [IssuedRecord(**item) for item in json.loads(path.read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError) as err:
            raise TlsError(f"cannot read {path}: {err}") from err

    def mark_revoked(self, which: str) -> list[IssuedRecord]:
        """Mark the certificates with serial `which` (hex), or of subject `which`, revoked; return them."""
        with self.locked():
            records = self.issued()
            wanted = which.lower().removeprefix("0x")
            hits = [r for r in records if r.serial == wanted or r.subject == which]
            if not hits:
                raise CertificateNotFound(f"no certificate with serial or subject {which!r}")
            stamp = _now().isoformat()
            changed = [replace(r, revoked_at=r.revoked_at or stamp) if r in hits else r for r in records]
            self._save_index(changed)
        return [r for r in changed if r.serial in {h.serial for h in hits}]

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The CA's lock (not reentrant): held to read and rewrite the index, and to write the CRL from it."""
        return exclusive(self.directory / LOCK)

    def _save_index(self, records: list[IssuedRecord]) -> None:
        data = json.dumps([asdict(r) for r in records], indent=1).encode()
        _write_private(self.directory / INDEX, data)

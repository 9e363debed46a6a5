"""Errors of the certificate authority."""

from __future__ import annotations

from hub.errors import HubError


class TlsError(HubError):
    """Base of the certificate authority's errors."""


class CaMissing(TlsError):
    """There is no CA in the data directory (and it was not to be created)."""


class CertificateNotFound(TlsError):
    """No issued certificate matches the serial number or name given."""

"""The provider for a spec's kind (issue 20); client libraries are imported only for the kinds in use."""

from __future__ import annotations

from hark_fleet.hub.offsite.base import KINDS, Provider, ProviderError, ProviderSpec


def open_provider(spec: ProviderSpec) -> Provider:
    """A provider for `spec`; ProviderError("config") for an unknown kind or an unusable configuration."""
    if spec.kind == "local":
        from hark_fleet.hub.offsite.local import LocalProvider

        return LocalProvider(spec)
    if spec.kind == "s3":
        from hark_fleet.hub.offsite.s3 import S3Provider

        return S3Provider(spec)
    if spec.kind == "sftp":
        from hark_fleet.hub.offsite.sftp import SFTPProvider

        return SFTPProvider(spec)
    raise ProviderError("config", f"unknown kind {spec.kind!r} (one of {', '.join(KINDS)})")

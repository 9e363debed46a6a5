"""The provisioning package's error types."""

from __future__ import annotations


class ProvisionError(Exception):
    """Base of every error the provisioning code raises on purpose."""


class MdnsError(ProvisionError):
    """mDNS cannot be started on the chosen interfaces."""


class RequestFailed(ProvisionError):
    """An HTTP request to a hub or a node failed: no answer, or an error answer (`status`, `code`)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class CsvError(ProvisionError):
    """A bulk file cannot be read or has a bad row; the message names the line."""


class NodeNotFound(ProvisionError):
    """No node with that hardware id or node id was seen on the LAN."""

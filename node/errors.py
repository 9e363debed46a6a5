"""The node agent's error types."""

from __future__ import annotations

from hark_fleet.protocol.errors import HarkError


class NodeError(HarkError):
    """Base of every error the node agent raises on purpose."""


class StateError(NodeError):
    """The state file cannot be read or written."""


class OutboxError(NodeError):
    """The outbox database cannot be opened or is of an unknown schema."""


class HubUnreachable(NodeError):
    """The hub did not answer (connection refused, timeout, 5xx)."""


class HubRejected(NodeError):
    """The hub answered with a client error (bad credential, wrong node)."""

    def __init__(self, message: str, status: int, code: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code  # the API's `error.code`, e.g. `stale_lease`
        self.headers = headers or {}


class HubProtocolError(NodeError):
    """The hub answered with a body the node cannot understand."""

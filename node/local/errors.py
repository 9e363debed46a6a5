"""Errors of the local endpoint; the base handler renders them as `{"error": {"code", "message"}}`."""

from __future__ import annotations

from hark_fleet.node.errors import NodeError
from hark_fleet.protocol.errors import HttpError


class LocalError(NodeError, HttpError):
    """An error that answers a local request: HTTP status, code, message and extra members."""


class InvalidRequest(LocalError):
    status = 400
    code = "invalid_request"


class PayloadTooLarge(LocalError):
    status = 413
    code = "payload_too_large"


class ClaimRefused(LocalError):
    """A wrong claim code or credential."""

    status = 403
    code = "claim_code_invalid"


class AlreadyEnrolled(LocalError):
    status = 409
    code = "already_enrolled"


class TooManyAttempts(LocalError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "Too many wrong codes; try again later.",
            headers={"Retry-After": str(retry_after_s)},
            retry_after_s=retry_after_s,
        )


class NotFound(LocalError):
    status = 404
    code = "not_found"


class MethodNotAllowed(LocalError):
    status = 405
    code = "method_not_allowed"

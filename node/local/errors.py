"""Errors of the local endpoint; the base handler renders them as `{"error": {"code", "message"}}`."""

from __future__ import annotations

from typing import Any

from node.errors import NodeError


class LocalError(NodeError):
    """An error that answers a local request: HTTP status, code, message and extra members."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


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

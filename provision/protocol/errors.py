"""The error bases both sides share: every error hark raises on purpose, and those that answer an HTTP request."""

from __future__ import annotations

from typing import Any


class HarkError(Exception):
    """Base of every error hark raises on purpose."""


class ConfigError(HarkError):
    """The process configuration is invalid; the message names the key."""


class HttpError(HarkError):
    """An error that answers an HTTP request: status, code, message and extra members of the error body.

    The hub's API and the node's local endpoint render it the same way:
    `{"error": {"code": "...", "message": "...", ...extra}}`.
    """

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}

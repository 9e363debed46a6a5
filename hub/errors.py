"""The hub's error types; `hub.api.base` renders them in the API's error shape."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterable
from typing import Any

from hark_fleet.protocol.errors import HarkError, HttpError


class HubError(HarkError):
    """Base of every error the hub raises on purpose."""


class StartupError(HubError):
    """The hub cannot start (address taken, database unreachable...)."""


class DatabaseUnusable(StartupError):
    """The database is missing, empty or damaged while the data directory holds an earlier hub's state."""


class ApiError(HubError, HttpError):
    """An error that answers an API request: HTTP status, code, message and extra fields."""


class InvalidRequest(ApiError):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str = "The request is invalid.", fields: dict[str, str] | None = None, **extra: Any) -> None:
        if fields:
            extra["fields"] = fields
        super().__init__(message, **extra)


class Unauthenticated(ApiError):
    status = 401
    code = "unauthenticated"

    def __init__(self, message: str = "Authentication is required.", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="hark"'})
        super().__init__(message, **kwargs)


class Forbidden(ApiError):
    """403; `required` and `current` are always answered as lists of permissions (API.md), whatever was passed."""

    status = 403
    code = "forbidden"

    def __init__(
        self, message: str, *, required: str | Iterable[str] | None = None, current: Iterable[str] | None = None, **kwargs: Any
    ) -> None:
        if required is not None:
            kwargs["required"] = [required] if isinstance(required, str) else list(required)
        if current is not None:
            kwargs["current"] = list(current)
        super().__init__(message, **kwargs)


class NotFound(ApiError):
    status = 404
    code = "not_found"

    def __init__(self, message: str = "Not found.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)}, retry_after_s=retry_after_s)


class ServiceUnavailable(ApiError):
    status = 503
    code = "unavailable"


class InsufficientStorage(ApiError):
    status = 507
    code = "insufficient_storage"

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(
            message
            or "The hub's data disk is full: this change was not saved. Reads keep working; "
            "writes work again by themselves once space is freed (delete recordings or grow the disk).",
            **kwargs,
        )


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
POSTGRES_DISK_FULL = "53100"


def is_storage_full(err: BaseException | None) -> bool:
    """Whether `err`, or an error it wraps, says the disk is full: ENOSPC/EDQUOT, SQLite's SQLITE_FULL, PostgreSQL's disk_full."""
    for _ in range(5):  # the driver's error sits under peewee's (__context__) and ours (__cause__)
        if err is None:
            return False
        if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(err, sqlite3.Error) and (
            getattr(err, "sqlite_errorname", None) == "SQLITE_FULL" or "database or disk is full" in str(err)
        ):
            return True
        if getattr(err, "pgcode", None) == POSTGRES_DISK_FULL:
            return True
        err = err.__cause__ or err.__context__
    return False

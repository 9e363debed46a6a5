"""Permissions and the built-in roles (API.md, Permissions and scope)."""

from __future__ import annotations

from collections.abc import Iterable

ALL_PERMISSIONS: tuple[str, ...] = (
    "auth:manage",
    "audit:read",
    "node:read",
    "node:manage",
    "node:control",
    "listen:monitor",
    "listen:manage",
    "health:read",
    "health:acknowledge",
    "recording:read",
    "recording:read_own",
    "recording:create",
    "recording:control",
    "recording:playback",
    "recording:download",
    "recording:edit",
    "recording:delete",
    "recording:share",
    "schedule:read",
    "schedule:manage",
    "settings:read",
    "settings:manage",
    "notify:read",
    "notify:manage",
    "site:read",
    "site:manage",
    "metrics:read",
    "auth:keys",
)

KEY_MANAGEMENT = "auth:keys"  # an API key's scope to create, rotate and revoke keys (a login session always may)
NODE_ONLY = frozenset({"node:control"})
KEY_ONLY = frozenset({KEY_MANAGEMENT})
USER_PERMISSIONS = tuple(p for p in ALL_PERMISSIONS if p not in NODE_ONLY | KEY_ONLY)
KEY_SCOPES = tuple(p for p in ALL_PERMISSIONS if p not in NODE_ONLY)  # what a key's `scopes` may name
_READS = tuple(p for p in USER_PERMISSIONS if p.endswith(":read"))
# Holding the first means holding the second: reading every recording includes reading one's own.
IMPLIED: dict[str, frozenset[str]] = {"recording:read": frozenset({"recording:read_own"})}


def with_implied(permissions: frozenset[str]) -> frozenset[str]:
    """`permissions` and what they imply (the recording read routes need `recording:read_own`)."""
    extra = [IMPLIED[p] for p in permissions if p in IMPLIED]
    return permissions.union(*extra) if extra else permissions


BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(USER_PERMISSIONS),
    "operator": frozenset(
        _READS
        + (
            "listen:monitor",
            "health:acknowledge",
            "recording:read_own",
            "recording:create",
            "recording:control",
            "recording:playback",
            "recording:download",
            "recording:edit",
            "recording:share",
            "schedule:manage",
        )
    ),
    "technician": frozenset(
        (
            "node:read",
            "node:manage",
            "health:read",
            "health:acknowledge",
            "listen:monitor",
            "recording:read",
            "recording:read_own",
            "recording:playback",
            "settings:read",
            "notify:read",
            "site:read",
        )
    ),
    "viewer": frozenset(
        (
            "node:read",
            "health:read",
            "recording:read",
            "recording:read_own",
            "schedule:read",
            "settings:read",
            "notify:read",
            "site:read",
        )
    ),
    # Makes recordings and reads, plays and downloads only those it started.
    "recordist": frozenset(
        (
            "node:read",
            "site:read",
            "health:read",
            "recording:read_own",
            "recording:create",
            "recording:control",
            "recording:playback",
            "recording:download",
            "listen:monitor",
        )
    ),
}


def permissions_for_roles(roles: Iterable[str]) -> frozenset[str]:
    """The union of the permissions the named built-in roles grant (unknown roles grant nothing)."""
    granted: set[str] = set()
    for role in roles:
        granted |= BUILTIN_ROLES.get(role, frozenset())
    return frozenset(granted)


def sorted_permissions(permissions: Iterable[str]) -> list[str]:
    """Permissions in the order of ALL_PERMISSIONS."""
    chosen = set(permissions)
    return [p for p in ALL_PERMISSIONS if p in chosen]

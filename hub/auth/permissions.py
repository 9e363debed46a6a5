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
    "schedule:read",
    "schedule:manage",
    "settings:read",
    "settings:manage",
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

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset(USER_PERMISSIONS),
    "operator": frozenset(
        _READS
        + (
            "listen:monitor",
            "health:acknowledge",
            "recording:create",
            "recording:control",
            "recording:playback",
            "recording:download",
            "recording:edit",
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
            "recording:playback",
            "settings:read",
            "site:read",
        )
    ),
    "viewer": frozenset(("node:read", "health:read", "recording:read", "schedule:read", "settings:read", "site:read")),
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

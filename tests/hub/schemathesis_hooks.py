"""Schemathesis hooks for tests/hub/test_schemathesis.py: who the run is, and how it cannot lock itself out.

Every request is the first admin's, with one login session (`HARK_ST_TOKEN`), except:

- the agent routes (those needing `node:control`): they go with the credential of a node enrolled
  for the run, to that node's own `{id}`, as a node would call them;

- `POST /auth/logout` and `POST /auth/logout-all`, which end the caller's own sessions: they are
  sent as a second principal, a user made for this and logged in afresh before each one;
- a write addressed to a protected id (the admin, that second user, the admin's session, the run's
  node: disable, delete, change access or password, revoke, rotate) is sent to `protected-id`
  instead, a 404.

Nothing else the API offers ends the admin's session. Settings come from the environment the
test gives the schemathesis process.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

import httpx
import schemathesis

MAX_QUERY_BYTES = 48 * 1024  # of the 64 KiB request head, leaving room for the path and headers
LOGOUT_PATHS = ["/api/v1/auth/logout", "/api/v1/auth/logout-all"]
AGENT_OPERATIONS = frozenset(filter(None, os.environ.get("HARK_ST_AGENT_OPERATIONS", "").split(",")))  # "POST /api/..."
PROTECTED = frozenset(filter(None, os.environ.get("HARK_ST_PROTECTED_IDS", "").split(",")))


def _is_agent(ctx: Any) -> bool:
    return f"{ctx.operation.method.upper()} {ctx.operation.path}" in AGENT_OPERATIONS


def _is_admin(ctx: Any) -> bool:
    return not _is_agent(ctx) and ctx.operation.path not in LOGOUT_PATHS


def _bearer(case: Any, token: str) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


@schemathesis.auth(refresh_interval=None).apply_to(_is_admin)
class Admin:
    """The first admin's login session."""

    def get(self, case: Any, context: Any) -> str:
        return os.environ["HARK_ST_TOKEN"]

    def set(self, case: Any, data: str, context: Any) -> None:
        _bearer(case, data)


@schemathesis.auth(refresh_interval=None).apply_to(path=LOGOUT_PATHS)
class LogoutPrincipal:
    """A fresh session of the second principal for each logout."""

    def get(self, case: Any, context: Any) -> str:
        response = httpx.post(
            f"{os.environ['HARK_ST_URL']}/api/v1/auth/login",
            json={"username": os.environ["HARK_ST_LOGOUT_USER"], "password": os.environ["HARK_ST_LOGOUT_PASSWORD"]},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["data"]["token"])

    def set(self, case: Any, data: str, context: Any) -> None:
        _bearer(case, data)


@schemathesis.auth(refresh_interval=None).apply_to(_is_agent)
class Node:
    """The run's node, with its credential."""

    def get(self, case: Any, context: Any) -> str:
        return os.environ["HARK_ST_NODE_CREDENTIAL"]

    def set(self, case: Any, data: str, context: Any) -> None:
        _bearer(case, data)


@schemathesis.hook
def filter_query(context: Any, query: dict[str, Any] | None) -> bool:
    """Within the request head the HTTP layer takes (64 KiB, documented in the OpenAPI info): a longer one is refused
    with a bare 400 before the API sees it, which says nothing of the operation."""
    return query is None or len(urlencode(query, doseq=True)) <= MAX_QUERY_BYTES


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Agent routes address the run's node; writes stay off the protected user and session ids."""
    if _is_agent(case) and case.operation.path.startswith("/api/v1/nodes/{id}/"):
        case.path_parameters["id"] = os.environ["HARK_ST_NODE_ID"]
        return
    if case.method.upper() in ("GET", "HEAD") or not case.path_parameters:
        return
    for name, value in list(case.path_parameters.items()):
        if str(value) in PROTECTED:
            case.path_parameters[name] = "protected-id"

"""Technicians at a node: the PIN (kept as an argon2 hash), hub-signed tokens, their local actions, commissioning reports.

The hub signs technician tokens with an Ed25519 key in its data directory; a node gets the
public key and the PIN's hash with its technician access, and checks both itself, so a
technician can log in at the box while the hub is away.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hark_fleet.hub.auth.passwords import hash_password
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import CommissioningReport, Node, database_proxy
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import get_scoped
from hark_fleet.protocol.file_lock import read_or_create

PIN_PATTERN = re.compile(r"^[0-9]{4,12}$")
PIN_SETTING = "technician_pin_hash"
TOKEN_AUDIENCE_PREFIX = "hark-node:"
DEFAULT_TOKEN_TTL_S = 8 * 3600
MAX_TOKEN_TTL_S = 7 * 24 * 3600
KEY_FILE = "technician-signing-key.pem"
ACTION_KIND = "technician.action"
KEEP_REPORTS = 50


def get_node(node_id: str, scope: SiteScope) -> Node:
    """A node inside the caller's sites, or 404."""
    node: Node = get_scoped(Node, node_id, Node.site, scope)
    return node


def pin_hash(pin: str | None) -> str | None:
    """The argon2 hash of a technician PIN (None clears it); InvalidRequest for a bad PIN (CPU-heavy: run_cpu)."""
    if pin is None:
        return None
    if not PIN_PATTERN.match(pin):
        raise InvalidRequest("Invalid technician PIN.", fields={"technician_pin": "4 to 12 digits"})
    return hash_password(pin)


def pin_settings(settings: dict[str, Any], hashed: str | None) -> dict[str, Any]:
    """The node's settings with the PIN's hash set (or removed for None)."""
    kept = {k: v for k, v in settings.items() if k != PIN_SETTING}
    return kept if hashed is None else {**kept, PIN_SETTING: hashed}


def _new_key_pem() -> bytes:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class TechnicianSigner:
    """The hub's Ed25519 key for technician tokens, made on first use and kept owner-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = read_or_create(path, _new_key_pem, mode=0o600)  # one key for every hub sharing the data directory
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self._key = key
        self.public_pem = (
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        )

    def issue(self, node_id: str, subject: str, name: str, ttl_s: int, now: float | None = None) -> tuple[str, dict[str, Any]]:
        """A signed token for one technician at one node, valid `ttl_s` seconds; the token and its claims."""
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": "hark-hub",
            "aud": f"{TOKEN_AUDIENCE_PREFIX}{node_id}",
            "sub": subject,
            "name": name,
            "iat": issued,
            "exp": issued + ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA"), claims


@lru_cache(maxsize=4)
def signer_for(data_dir: Path) -> TechnicianSigner:
    """The hub's signer (blocking on first use: reads or writes the key file)."""
    return TechnicianSigner(data_dir / KEY_FILE)


def token_issued(actor: Actor, scope: SiteScope, node_id: str, claims: dict[str, Any]) -> dict[str, Any]:
    """Audit a token's issue (the node must be in the caller's sites)."""
    node = get_node(node_id, scope)
    expires = utcnow() + timedelta(seconds=claims["exp"] - claims["iat"])
    after = {"jti": claims["jti"], "subject": claims["sub"], "expires_at": iso(expires)}
    record(actor, "node.technician_token", permission="node:manage", target=("node", node.id), after=after)
    return after


def access_for(node_id: str) -> str | None:
    """The PIN hash a node checks technicians with (None: no PIN set)."""
    node = Node.get_or_none(Node.id == node_id)
    return None if node is None else (node.settings or {}).get(PIN_SETTING)


# How a node names a technician who logged in without a token (older nodes send no `method`).
_WHO_METHODS = {"PIN holder": "pin", "claim-code holder": "claim_code", "node credential": "credential"}


def _text(value: Any, limit: int) -> str | None:
    return str(value)[:limit] if value is not None and value != "" else None


def local_actor(node: Node, details: dict[str, Any]) -> Actor:
    """Who did a technician's action at `node`, from what the node logged.

    A token's subject (the hub's id for the person it was issued to) and name; `pin@<node id>`,
    "PIN user at <node>" for a PIN; `claim-code@<node id>` for the claim code; no id and
    "unidentified technician at <node>" for a refused login; the node itself for a script using
    the node's own credential. From the technician's address at the node.
    """
    who, source = _text(details.get("who"), 200), _text(details.get("source"), 64)
    method = details.get("method") or _WHO_METHODS.get(who or "")
    if details.get("action") == "login" and details.get("outcome") == "failure":
        return Actor("technician", None, f"unidentified technician at {node.name}", source)
    if method == "pin":
        return Actor("technician", f"pin@{node.id}", f"PIN user at {node.name}", source)
    if method == "claim_code":
        return Actor("technician", f"claim-code@{node.id}", f"claim-code holder at {node.name}", source)
    if method == "credential":
        return Actor("node", node.id, node.name, source)
    return Actor("technician", _text(details.get("subject"), 40), who, source)  # a token (an older node sends no subject)


def record_local_action(node: Node, details: dict[str, Any]) -> None:
    """A technician's action at the node (from its outbox): an audit line by that technician, about the node."""
    action = str(details.get("action") or "unknown")[:60]
    outcome: Literal["success", "failure"] = "failure" if details.get("outcome") == "failure" else "success"
    record(
        local_actor(node, details),
        f"technician.{action}",
        target=("node", node.id),
        after={**details, "node": {"id": node.id, "name": node.name}},
        outcome=outcome,
        reason=f"by {details.get('who')} ({details.get('method') or 'unknown method'}) at node {node.name}"
        f" from {details.get('source')} at {details.get('at')}",
    )


def report_to_api(row: CommissioningReport) -> dict[str, Any]:
    return {
        "id": row.id,
        "node_id": row.node_id,
        "created_at": iso(row.created_at),
        "passed": row.passed == "true",
        "report": row.report,
    }


def store_report(node_id: str, report: dict[str, Any]) -> dict[str, Any]:
    """Keep a commissioning report with the node (the newest KEEP_REPORTS)."""
    node = Node.get_by_id(node_id)
    with database_proxy.atomic():
        row = CommissioningReport.create(
            id=new_id("com"),
            node_id=node.id,
            created_at=utcnow(),
            passed="true" if report.get("passed") else "false",
            report=report,
        )
        stale = (
            CommissioningReport.select(CommissioningReport.id)
            .where(CommissioningReport.node_id == node.id)
            .order_by(CommissioningReport.created_at.desc())
            .offset(KEEP_REPORTS)
        )
        CommissioningReport.delete().where(CommissioningReport.id.in_([r.id for r in stale])).execute()
        record(Actor("node", node.id, node.name), "node.commissioning_report", target=("node", node.id), after={"id": row.id})
    return report_to_api(row)


def list_reports(scope: SiteScope, node_id: str) -> list[dict[str, Any]]:
    node = get_node(node_id, scope)
    rows = (
        CommissioningReport.select().where(CommissioningReport.node_id == node.id).order_by(CommissioningReport.created_at.desc())
    )
    return [report_to_api(r) for r in rows]

"""Who may log in to the embedded broker and which topics each may use: deny unless a rule grants."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Literal

from hark_fleet.hub.clock import utcnow
from hark_fleet.hub.const import HUB_MQTT_USERNAME
from hark_fleet.protocol.topics import node_prefix

Action = Literal["subscribe", "publish", "receive"]
CredentialRow = tuple[str | None, str | None, datetime | None]  # hash, previous hash, previous valid until


class BrokerAccess:
    """The embedded broker's policy.

    The hub logs in as `hark-hub` with a secret made at start and may use every topic.
    A node logs in with its id and credential, and with its id as client id (sessions are
    keyed by client id: any other would let it resume or take over someone else's), publishes
    only under `hark/v1/nodes/{its id}/` outside `cmd/`, and subscribes only to its own `cmd/` topics.
    A node's id is a client id no one else may use, the hub included. Everyone else is refused.
    """

    def __init__(self, hub_password: str) -> None:
        self._hub_password = hub_password
        self._nodes: dict[str, CredentialRow] = {}

    def set_node_credentials(self, table: dict[str, CredentialRow]) -> None:
        """Replace the known node credentials (called after every enrollment, rotation or deletion)."""
        self._nodes = dict(table)

    def check_connect(self, client_id: str | None, username: str | None, password: str | None) -> bool:
        """Whether a CONNECT may go ahead: a known login, and a client id bound to it."""
        if not self.check_login(username, password):
            return False
        if username in self._nodes:
            return client_id == username
        return client_id not in self._nodes

    def check_login(self, username: str | None, password: str | None) -> bool:
        if username is None or password is None:
            return False
        if username == HUB_MQTT_USERNAME:
            return hmac.compare_digest(password.encode(), self._hub_password.encode())
        row = self._nodes.get(username)
        if row is None:
            return False
        digest = hashlib.sha256(password.encode()).hexdigest()
        current, previous, until = row
        if current is not None and hmac.compare_digest(digest, current):
            return True
        return previous is not None and until is not None and until > utcnow() and hmac.compare_digest(digest, previous)

    def may(self, username: str | None, topic: str, action: Action) -> bool:
        if username == HUB_MQTT_USERNAME:
            return True
        if username is None or username not in self._nodes:
            return False
        prefix = node_prefix(username)
        if action == "publish":  # its own topics, but not its `cmd/`: commands come from the hub only
            return topic.startswith(prefix) and not topic.startswith(prefix + "cmd/") and "+" not in topic and "#" not in topic
        # subscribe and receive: only the node's own commands (wildcards stay inside that subtree)
        return topic.startswith(prefix + "cmd/")

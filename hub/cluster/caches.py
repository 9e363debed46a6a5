"""What each hub instance keeps in memory that a change made on another instance must invalidate (issue 24).

- The authenticator's looked-up secrets (principals: permissions and sites with them): `forget_all()` on one
  instance sends a `caches.forget` cluster message; every other instance forgets its own (`forget_local`, not
  sent on again) as soon as the NOTIFY arrives. An instance that lost its listening connection may have missed
  some: it forgets everything once it listens again.
- The meter fan-out's site of each node (who may see its frames) and a deleted node's unstored minutes: from the
  `node.updated` (site changed) and `node.deleted` events of every instance.

Nothing of this is wired on SQLite: there is one hub, whose handlers invalidate its own caches.
"""

from __future__ import annotations

from typing import Any

from hark_fleet.hub.events import Event

FORGET = "caches.forget"


def invalidate_everywhere(hub: Any) -> None:
    """Wire the invalidations between instances (PostgreSQL only); called once the hub's parts are made."""
    if hub.pg_notify is None:
        return
    authenticator, messages = hub.authenticator, hub.cluster_messages

    def forgotten_elsewhere(payload: dict[str, Any], sender: str) -> None:
        if sender != hub.instance_id:
            authenticator.forget_local()

    authenticator.broadcast = lambda: messages.send_soon(FORGET, {})
    messages.on(FORGET, forgotten_elsewhere)
    hub.pg_notify.on_reconnect(authenticator.forget_local)

    def node_changed(event: Event) -> None:
        node_id = event.data.get("node_id")
        if not isinstance(node_id, str):
            return
        if event.type == "node.updated" and "site" in (event.data.get("changed") or ()):
            hub.ingest.meters.forget_site(node_id)
        elif event.type == "node.deleted":
            hub.ingest.meters.forget(node_id)
            hub.ingest.history.forget(node_id)

    hub.events.add_listener(node_changed, everywhere=True)

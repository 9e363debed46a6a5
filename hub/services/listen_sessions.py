"""Live listen sessions in the database (issue 23): opening one, its states, its counters, who may see or end it.

Every function runs on the database thread (`hub.db.run`); the live side (streams, sockets, the node's
`cmd/listen`) is `hark_fleet.hub.listen.runtime.ListenHub`, which calls these. A session is
`active` (its client connected or not yet) -> `disconnected` (its client went away, within the grace)
-> `terminated` (with `end_reason`: client_gone | disconnected | ended | node_offline | node_stopped | hub_stopped).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import peewee
from hark_fleet.hub.auth.principal import Principal, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ChannelMapAssignment, ChannelMapTemplate, HubInstance, ListenSession, Node, database_proxy
from hark_fleet.hub.errors import Conflict, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import audit, listen_settings
from hark_fleet.hub.services.audit import Actor
from hark_fleet.hub.services.nodes import get_node
from hark_fleet.protocol.listen import (
    CODECS,
    DEFAULT_OPUS_BITRATE,
    MAX_CHANNELS,
    OPUS_BITRATES,
    OPUS_RATES,
    PCM_RATES,
    ListenStream,
    stream_id_for,
)

MANAGE = "listen:manage"
MONITOR = "listen:monitor"
STATES = ("active", "disconnected", "terminated")
OPEN_STATES = ("active", "disconnected")
END_REASONS = ("client_gone", "disconnected", "ended", "node_offline", "node_stopped", "hub_stopped")
ONLINE = ("online", "degraded")  # node statuses a listen can start on
STREAM_URL = "/api/v1/nodes/{node_id}/listen/stream?session={session_id}"


class OpenBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/v1/nodes/{id}/listen`."""

    channels: list[int] | None = None
    programme: str | None = None
    codec: str = "opus"
    bitrate: int | None = None
    sample_rate: int | None = None


@dataclass(frozen=True, slots=True)
class Format:
    """What a node stream encodes: sessions asking for the same share one stream."""

    channels: tuple[int, ...]
    codec: str
    sample_rate: int
    bitrate: int | None

    def stream(self, stream_id: str) -> ListenStream:
        return ListenStream(stream_id, list(self.channels), self.codec, self.sample_rate, self.bitrate)

    def stream_id(self, node_id: str) -> str:
        """This format's stream on the node: the same id on every hub instance (they share the node's encoder)."""
        return stream_id_for(node_id, self.channels, self.codec, self.sample_rate, self.bitrate)


def format_of(row: ListenSession) -> Format:
    return Format(tuple(row.channels or []), row.codec, row.sample_rate, row.bitrate)


# -- the API shape ------------------------------------------------------------------------


def bytes_per_s(row: ListenSession, now: datetime | None = None) -> float:
    """Bytes sent over the seconds its client was connected (the latest connection's span; 0 if it never connected)."""
    if row.connected_at is None:
        return 0.0
    if row.state == "active" and row.ended_at is None:
        end = now or utcnow()
    elif row.disconnected_at is not None and row.disconnected_at >= row.connected_at:
        end = row.disconnected_at
    else:
        end = row.ended_at or now or utcnow()
    seconds = (end - row.connected_at).total_seconds()
    return round(row.bytes_sent / seconds, 1) if seconds > 0 else 0.0


def to_api(row: ListenSession, node_name: str | None = None) -> dict[str, Any]:
    """A session as the API answers it (the contract's shape)."""
    actor = dict(row.actor or {})
    user = {"id": row.user_id, "name": actor.get("user_name") or actor.get("name")} if row.user_id else None
    return {
        "id": row.id,
        "node_id": row.node_id,
        "node_name": node_name,
        "site": row.site,
        "user": user,
        "actor": {k: actor.get(k) for k in ("type", "id", "name")},
        "client_address": row.client_address,
        "user_agent": row.user_agent,
        "codec": row.codec,
        "bitrate": row.bitrate,
        "sample_rate": row.sample_rate,
        "channels": list(row.channels or []),
        "programme": row.programme,
        "stream_id": row.stream_id,
        "state": row.state,
        "started_at": iso(row.started_at),
        "connected_at": iso(row.connected_at) if row.connected_at else None,
        "disconnected_at": iso(row.disconnected_at) if row.disconnected_at else None,
        "ended_at": iso(row.ended_at) if row.ended_at else None,
        "end_reason": row.end_reason,
        "ended_by": row.ended_by,
        "bytes_sent": row.bytes_sent,
        "frames_sent": row.frames_sent,
        "bytes_per_s": bytes_per_s(row),
        "stream_url": STREAM_URL.format(node_id=row.node_id, session_id=row.id),
    }


def node_names(node_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(node_ids))
    if not ids:
        return {}
    return {n.id: n.name for n in Node.select(Node.id, Node.name).where(Node.id.in_(ids))}


def to_api_many(rows: list[ListenSession]) -> list[dict[str, Any]]:
    names = node_names(r.node_id for r in rows)
    return [to_api(r, names.get(r.node_id)) for r in rows]


def session_api(session_id: str) -> dict[str, Any]:
    row = ListenSession.get_by_id(session_id)
    return to_api(row, node_names([row.node_id]).get(row.node_id))


# -- who may do what ------------------------------------------------------------------------


def owner_key(principal: Principal) -> tuple[str | None, str]:
    """(user id, actor id) a session opened by `principal` is owned by."""
    return principal.user_id, principal.id


def is_own(row: ListenSession, principal: Principal | None) -> bool:
    """The session was opened by this caller: the same user (any of its sessions or keys), or the same service key."""
    if principal is None:
        return False
    if row.user_id is not None:
        return principal.user_id == row.user_id
    actor = row.actor or {}
    return actor.get("id") == principal.id and actor.get("type") == principal.kind


def manages(row: ListenSession, principal: Principal | None) -> bool:
    """The caller holds listen:manage on the session's site."""
    return principal is not None and principal.can(MANAGE) and principal.scope(MANAGE).allows(row.site)


def visible(row: ListenSession, principal: Principal | None) -> bool:
    """Own sessions, and with listen:manage every session of its sites."""
    return is_own(row, principal) or manages(row, principal)


def may_end(row: ListenSession, principal: Principal | None) -> bool:
    """Who may end (DELETE) or disconnect a session: its owner, or a listen:manage holder on its site."""
    return visible(row, principal)


def get_visible(principal: Principal | None, session_id: str) -> ListenSession:
    """The session if the caller may see it, else 404 (as for a session that does not exist)."""
    row = ListenSession.get_or_none(ListenSession.id == session_id)
    if row is None or not visible(row, principal):
        raise NotFound(f"Listen session {session_id} not found.")
    return row


def get_of_node(scope: SiteScope, node_id: str, session_id: str) -> ListenSession:
    """A session of a node inside the caller's scope, else 404."""
    get_node(node_id, scope)
    row = ListenSession.get_or_none((ListenSession.id == session_id) & (ListenSession.node_id == node_id))
    if row is None:
        raise NotFound(f"Listen session {session_id} not found on node {node_id}.")
    return row


def node_sessions(scope: SiteScope, node_id: str) -> list[dict[str, Any]]:
    """`GET /nodes/{id}/listen`: the node's sessions not terminated (who is listening), oldest first."""
    node = get_node(node_id, scope)
    rows = list(
        ListenSession.select()
        .where((ListenSession.node_id == node_id) & (ListenSession.state.in_(OPEN_STATES)))
        .order_by(ListenSession.started_at, ListenSession.id)
    )
    return [to_api(r, node.name) for r in rows]


# -- opening ----------------------------------------------------------------------------------


def logical_channels(node: Node) -> tuple[int | None, dict[str, list[int]]]:
    """The node's logical channel count as the hub knows it (None: unknown) and its programmes (name -> indices)."""
    assignment = ChannelMapAssignment.get_or_none(ChannelMapAssignment.node_id == node.id)
    if assignment is not None and assignment.template_id:
        template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == assignment.template_id)
        if template is not None:
            position = {str(c.get("name")): i for i, c in enumerate(template.channels or [])}
            programmes = {
                str(p["name"]): [position[n] for n in p.get("channels", []) if n in position] for p in template.programmes or []
            }
            return len(template.channels or []), programmes
    audio = (node.metrics or {}).get("audio") if isinstance(node.metrics, dict) else None
    inputs = audio.get("inputs") if isinstance(audio, dict) else None
    if isinstance(inputs, int) and inputs > 0:
        return inputs, {}
    defaults = [i.get("channels") for i in node.interfaces or [] if isinstance(i, dict) and i.get("default")]
    if defaults and isinstance(defaults[0], int) and defaults[0] > 0:
        return defaults[0], {}
    return None, {}


def resolve_format(body: OpenBody, node: Node) -> tuple[Format, str | None]:
    """The stream format the body asks for on this node, and the programme's name; every problem is a 400."""
    problems: dict[str, str] = {}
    count, programmes = logical_channels(node)
    programme = None
    channels: list[int] = []
    if body.channels is not None and body.programme is not None:
        problems["programme"] = "give channels or a programme, not both"
    elif body.programme is not None:
        if body.programme not in programmes:
            known = ", ".join(sorted(programmes)[:10]) or "none"
            problems["programme"] = f"the node's channel map has no programme {body.programme!r} (it has: {known})"
        elif not 1 <= len(programmes[body.programme]) <= MAX_CHANNELS:
            problems["programme"] = (
                f"a listen takes 1 or {MAX_CHANNELS} channels; this programme has {len(programmes[body.programme])}"
            )
        else:
            programme = body.programme
            channels = programmes[body.programme]
    elif body.channels is not None:
        channels = list(body.channels)
        if not 1 <= len(channels) <= MAX_CHANNELS:
            problems["channels"] = f"1 or {MAX_CHANNELS} logical channel indices"
        elif len(set(channels)) != len(channels):
            problems["channels"] = "a channel is listed twice"
        elif any(c < 0 for c in channels):
            problems["channels"] = "channel indices start at 0"
        elif count is not None and any(c >= count for c in channels):
            problems["channels"] = f"the node has {count} channel{'s' if count != 1 else ''} (0 to {count - 1})"
    else:
        channels = [0] if count == 1 else [0, 1]
    if body.codec not in CODECS:
        problems["codec"] = f"one of {', '.join(CODECS)}"
    bitrate: int | None = None
    rates = OPUS_RATES if body.codec == "opus" else PCM_RATES
    sample_rate = body.sample_rate if body.sample_rate is not None else 48000
    if body.codec in CODECS and sample_rate not in rates:
        problems["sample_rate"] = f"for {body.codec}: one of {', '.join(str(r) for r in rates)}"
    if body.codec == "opus":
        bitrate = body.bitrate if body.bitrate is not None else DEFAULT_OPUS_BITRATE
        if not OPUS_BITRATES[0] <= bitrate <= OPUS_BITRATES[1]:
            problems["bitrate"] = f"from {OPUS_BITRATES[0]} to {OPUS_BITRATES[1]} bits per second"
    elif body.bitrate is not None:
        problems["bitrate"] = "only for opus"
    if problems:
        raise InvalidRequest("The listen request is invalid.", fields=problems)
    return Format(tuple(channels), body.codec, sample_rate, bitrate), programme


def open_session(
    scope: SiteScope,
    principal: Principal,
    actor: Actor,
    node_id: str,
    body: OpenBody,
    user_agent: str | None,
    streams: dict[Format, str],
    hub_instance: str | None = None,
) -> tuple[dict[str, Any], Format]:
    """Open a session on a node (online, in scope, within the limits); `streams` are the node's running streams by format.

    Returns the session (API shape) and its format; its `stream_id` is the running stream's or the format's own
    (`Format.stream_id`). The limits count the sessions of every hub instance; on PostgreSQL two instances opening
    at once on one node or for one owner wait for each other (transaction advisory locks).
    """
    node = get_node(node_id, scope)
    fmt, programme = resolve_format(body, node)
    if node.status not in ONLINE:
        raise Conflict(f"Node {node.name} is {node.status}: it can only be listened to while online.", code="node_offline")
    limits = listen_settings.load()
    with database_proxy.atomic():
        user_id, actor_id = owner_key(principal)
        if isinstance(database_proxy.obj, peewee.PostgresqlDatabase):
            for key in sorted({f"listen:{node.id}", f"listen:{user_id or actor_id}"}):
                database_proxy.execute_sql("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
        on_node = ListenSession.select().where((ListenSession.node_id == node.id) & (ListenSession.state.in_(OPEN_STATES)))
        if on_node.count() >= limits.max_listeners_per_node:
            raise Conflict(
                f"Node {node.name} has {limits.max_listeners_per_node} listeners, the most allowed.",
                code="listen_limit",
                limit="max_listeners_per_node",
            )
        if owned_open(user_id, actor_id) >= limits.max_listeners_per_user:
            raise Conflict(
                f"{principal.name} has {limits.max_listeners_per_user} listen sessions open, the most allowed.",
                code="listen_limit",
                limit="max_listeners_per_user",
            )
        row = ListenSession.create(
            id=new_id("lsn"),
            node_id=node.id,
            site=node.site,
            user_id=user_id,
            actor={"type": actor.type, "id": actor.id, "name": actor.name},
            client_address=(actor.source_ip or "")[:64] or None,
            user_agent=(user_agent or "")[:300] or None,
            codec=fmt.codec,
            bitrate=fmt.bitrate,
            sample_rate=fmt.sample_rate,
            channels=list(fmt.channels),
            programme=programme,
            stream_id=streams.get(fmt) or fmt.stream_id(node.id),
            hub_instance=hub_instance,
            state="active",
            started_at=utcnow(),
        )
        after = to_api(row, node.name)
        audit.record(actor, "listen_session.open", permission=MONITOR, target=("listen_session", row.id), after=after)
    return after, fmt


def owned_open(user_id: str | None, actor_id: str) -> int:
    """How many sessions one owner has open (a service key's are matched on the actor id, in Python: JSON is not portable)."""
    query = ListenSession.select().where(ListenSession.state.in_(OPEN_STATES))
    if user_id is not None:
        return int(query.where(ListenSession.user_id == user_id).count())
    return sum(1 for r in query.where(ListenSession.user_id.is_null()) if (r.actor or {}).get("id") == actor_id)


# -- transitions --------------------------------------------------------------------------------


def mark_connected(session_id: str) -> dict[str, Any] | None:
    """The session's client opened its stream: active, connected now (None if it ended meanwhile)."""
    now = utcnow()
    updated = (
        ListenSession.update(state="active", connected_at=now, updated_at=now)
        .where((ListenSession.id == session_id) & (ListenSession.state.in_(OPEN_STATES)))
        .execute()
    )
    return session_api(session_id) if updated else None


def _held_by(instance: str | None) -> Any:
    """Only the sessions whose listener is on `instance` (None: any): another instance may have taken one over."""
    return ListenSession.hub_instance == instance if instance is not None else True


def mark_disconnected(session_id: str, bytes_sent: int, frames_sent: int, instance: str | None = None) -> bool:
    """The client's stream went away: disconnected (the grace runs), counters written (if still held by `instance`)."""
    now = utcnow()
    return bool(
        ListenSession.update(
            state="disconnected", disconnected_at=now, bytes_sent=bytes_sent, frames_sent=frames_sent, updated_at=now
        )
        .where((ListenSession.id == session_id) & (ListenSession.state == "active") & _held_by(instance))
        .execute()
    )


def flush_counters(counters: dict[str, tuple[int, int]], instance: str | None = None) -> None:
    """Write the byte and frame counters of live sessions (session id -> (bytes, frames)) still held by `instance`."""
    now = utcnow()
    with database_proxy.atomic():
        for session_id, (sent, frames) in counters.items():
            ListenSession.update(bytes_sent=sent, frames_sent=frames, updated_at=now).where(
                (ListenSession.id == session_id) & _held_by(instance)
            ).execute()


def terminate(
    session_ids: list[str],
    reason: str,
    actor: Actor,
    ended_by: dict[str, Any] | None = None,
    counters: dict[str, tuple[int, int]] | None = None,
    action: str | None = None,
    instance: str | None = None,
) -> list[dict[str, Any]]:
    """End these sessions (those not already terminated, and held by `instance` when given) with `reason`; audited as
    `action` when given.

    Returns the sessions after (API shape), only those this call ended.
    """
    if reason not in END_REASONS:
        raise ValueError(f"unknown end reason {reason}")
    now = utcnow()
    ended: list[dict[str, Any]] = []
    counters = counters or {}
    with database_proxy.atomic():
        rows = list(
            ListenSession.select().where(
                ListenSession.id.in_(session_ids) & (ListenSession.state != "terminated") & _held_by(instance)
            )
        )
        names = node_names(r.node_id for r in rows)
        for row in rows:
            before = to_api(row, names.get(row.node_id))
            fields: dict[str, Any] = {"state": "terminated", "ended_at": now, "end_reason": reason, "updated_at": now}
            if ended_by is not None:
                fields["ended_by"] = ended_by
            if row.id in counters:
                fields["bytes_sent"], fields["frames_sent"] = counters[row.id]
            if (
                row.state == "active"
                and row.connected_at is not None
                and (row.disconnected_at or row.connected_at) <= row.connected_at
            ):
                fields["disconnected_at"] = now  # its client was still connected: the stream closes now
            if (
                not ListenSession.update(**fields)
                .where((ListenSession.id == row.id) & (ListenSession.state != "terminated"))
                .execute()
            ):
                continue  # another instance ended it meanwhile
            for name, value in fields.items():
                setattr(row, name, value)
            after = to_api(row, names.get(row.node_id))
            if action is not None:
                audit.record(
                    actor,
                    action,
                    permission=MANAGE if action == "listen_session.disconnect" else MONITOR,
                    target=("listen_session", row.id),
                    before=before,
                    after=after,
                    reason=(ended_by or {}).get("reason"),
                )
            ended.append(after)
    return ended


def terminate_all_open(reason: str = "hub_stopped") -> int:
    """At hub start: every session a previous run left open ends (its socket and stream are gone)."""
    now = utcnow()
    return int(
        ListenSession.update(state="terminated", ended_at=now, end_reason=reason, updated_at=now)
        .where(ListenSession.state != "terminated")
        .execute()
    )


LIVE_S = 10.0  # a hub instance not seen for this long is gone (hark_fleet.hub.cluster.leases.LIVE_S)


def terminate_orphans(me: str, live_s: float = LIVE_S) -> list[str]:
    """PostgreSQL: end the open sessions whose hub instance is gone (not seen within `live_s`, or stopped), not `me`'s.

    Their listener's socket died with its instance. Times are the database's clock, as the instances' `seen_at`.
    Ended `hub_stopped`, not audited (as at a single hub's start); returns their ids. Several instances may run it at once.
    """
    live = HubInstance.select(HubInstance.id).where(
        HubInstance.stopped_at.is_null()
        & (HubInstance.seen_at > peewee.SQL("(now() AT TIME ZONE 'UTC') - make_interval(secs => %s)", (live_s,)))
    )
    orphaned = ListenSession.select(ListenSession.id, ListenSession.hub_instance).where(
        ListenSession.state.in_(OPEN_STATES)
        & (ListenSession.hub_instance.is_null() | ((ListenSession.hub_instance != me) & ListenSession.hub_instance.not_in(live)))
    )
    ended: list[str] = []
    now = utcnow()
    for row in list(orphaned):
        ended_by = {"type": "system", "id": None, "name": "hub", "reason": f"its hub instance {row.hub_instance} is gone"}
        fields: dict[str, Any] = {"state": "terminated", "ended_at": now, "end_reason": "hub_stopped", "updated_at": now}
        updated = (
            ListenSession.update(**fields, ended_by=ended_by)
            .where(
                (ListenSession.id == row.id)
                & ListenSession.state.in_(OPEN_STATES)
                & (
                    ListenSession.hub_instance.is_null()
                    if row.hub_instance is None
                    else ListenSession.hub_instance == row.hub_instance
                )
            )
            .execute()
        )
        if updated:
            ended.append(row.id)
    return ended


def take_over(session_id: str, instance: str) -> tuple[ListenSession, str | None] | None:
    """Move an open session's listener to `instance` (its client's stream reached this instance); (row, previous holder).

    None when the session is terminated or unknown.
    """
    for _ in range(3):
        row = ListenSession.get_or_none((ListenSession.id == session_id) & ListenSession.state.in_(OPEN_STATES))
        if row is None:
            return None
        previous = row.hub_instance
        if previous == instance:
            return row, previous
        held = ListenSession.hub_instance.is_null() if previous is None else ListenSession.hub_instance == previous
        if (
            ListenSession.update(hub_instance=instance, updated_at=utcnow())
            .where((ListenSession.id == session_id) & ListenSession.state.in_(OPEN_STATES) & held)
            .execute()
        ):
            row.hub_instance = instance
            return row, previous
    return None


def not_held(session_ids: list[str], instance: str) -> dict[str, str | None]:
    """Of these sessions, those no longer this instance's: id -> end reason when terminated, None when moved elsewhere."""
    if not session_ids:
        return {}
    rows = ListenSession.select(ListenSession.id, ListenSession.state, ListenSession.end_reason).where(
        ListenSession.id.in_(session_ids)
        & (
            (ListenSession.state == "terminated")
            | ListenSession.hub_instance.is_null()
            | (ListenSession.hub_instance != instance)
        )
    )
    return {r.id: (r.end_reason or "ended") if r.state == "terminated" else None for r in rows}


def stream_open(node_id: str, stream_id: str) -> bool:
    """Whether a session not terminated, on any hub instance, listens to this node stream."""
    return bool(
        ListenSession.select(ListenSession.id)
        .where((ListenSession.node_id == node_id) & (ListenSession.stream_id == stream_id) & ListenSession.state.in_(OPEN_STATES))
        .exists()
    )


def open_of_nodes(node_ids: list[str]) -> list[str]:
    """Ids of the sessions of these nodes not terminated."""
    return [
        r.id
        for r in ListenSession.select(ListenSession.id).where(
            ListenSession.node_id.in_(node_ids) & ListenSession.state.in_(OPEN_STATES)
        )
    ]


def node_statuses(node_ids: list[str]) -> dict[str, str]:
    """The status of each node that still exists."""
    return {n.id: n.status for n in Node.select(Node.id, Node.status).where(Node.id.in_(node_ids))}


def actor_json(actor: Actor, reason: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": actor.type, "id": actor.id, "name": actor.name}
    if reason is not None:
        out["reason"] = reason
    return out


def check_end(principal: Principal | None, session_id: str, node_id: str | None = None) -> ListenSession:
    """The session, if `principal` may end it (own, or listen:manage on its site): else 404 (unseen) / 409 (ended)."""
    row = ListenSession.get_or_none(ListenSession.id == session_id)
    if row is None or (node_id is not None and row.node_id != node_id) or not may_end(row, principal):
        raise NotFound(f"Listen session {session_id} not found.")
    if row.state == "terminated":
        raise Conflict(f"Listen session {session_id} has already ended ({row.end_reason}).", code="session_ended")
    return row

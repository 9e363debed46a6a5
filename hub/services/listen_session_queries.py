"""Who listens, and who listened (issue 23): the listen sessions as lists, facets, exports and details.

Read-only: the listen runtime (`hub.listen`) writes `ListenSession` rows. A listen:monitor holder sees its
own sessions (those of its user, or of the key itself for a service key); a listen:manage holder also sees
everyone's on the sites where it holds listen:manage. Anything else answers 404, as if it did not exist.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import ALL_SITES, Principal
from hark_fleet.hub.db.models import ListenSession, Node, User
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.hub.services import query
from hark_fleet.hub.services.listen_sessions import (
    MANAGE,
    OPEN_STATES,
    STATES,
    get_visible,
    is_own,
    manages,
    node_names,
    to_api,
    to_api_many,
)
from hark_fleet.hub.services.listing import (
    EXPORT_BATCH,
    Filter,
    ListRequest,
    ListSpec,
    _contains,
    build_query,
    encode_cursor,
    one_of,
    parse_list_request,
    site_in_scope,
)

CODECS = ("opus", "pcm16")
MINE = "mine"  # a query parameter of its own: it depends on who asks

Page = tuple[list[dict[str, Any]], str | None]

SESSION_LIST = ListSpec(
    model=ListenSession,
    serialize=to_api,  # node names filled in per page by `to_api_many`
    filters=(
        Filter("state", ListenSession.state, one_of(STATES)),
        Filter("node_id", ListenSession.node_id),
        Filter("user_id", ListenSession.user_id),
        Filter("codec", ListenSession.codec, one_of(CODECS)),
    ),
    time_field=ListenSession.started_at,
    site_field=ListenSession.site,
    descending=True,
    export_columns=(
        "id",
        "node_id",
        "node_name",
        "site",
        "user_id",
        "user_name",
        "client_address",
        "user_agent",
        "codec",
        "bitrate",
        "sample_rate",
        "channels",
        "programme",
        "stream_id",
        "state",
        "started_at",
        "connected_at",
        "disconnected_at",
        "ended_at",
        "end_reason",
        "bytes_sent",
        "frames_sent",
        "bytes_per_s",
    ),
)
ACTIVE_LIST = ListSpec(
    model=ListenSession,
    serialize=to_api,
    filters=(Filter("state", ListenSession.state, one_of(OPEN_STATES)), *SESSION_LIST.filters[1:]),
    time_field=ListenSession.started_at,
    site_field=ListenSession.site,
    descending=True,
    export_columns=SESSION_LIST.export_columns,
)
FACETS = ("state", "codec", "node_id", "user_id")


def parse_request(
    spec: ListSpec, args: Mapping[str, Sequence[str]], ids: Sequence[str] | None = None
) -> tuple[ListRequest, bool | None]:
    """The list parameters and `mine` (None: not given); every problem is named in one 400."""
    rest = {name: values for name, values in args.items() if name != MINE}
    problems: dict[str, str] = {}
    mine: bool | None = None
    if args.get(MINE):
        try:
            mine = query.boolean(args[MINE][-1])
        except ValueError as err:
            problems[MINE] = str(err)
    try:
        request = parse_list_request(spec, rest, ids)
    except InvalidRequest as err:
        err.extra.setdefault("fields", {}).update(problems)  # every problem in one 400
        raise
    if problems:
        raise InvalidRequest("Some query parameters are invalid.", fields=problems)
    return request, mine


# -- who sees what --------------------------------------------------------------------------------------------


def own(principal: Principal) -> Any:
    """SQL for `listen_sessions.is_own`: the caller's user's sessions, or, for a service key, the key's own.

    The actor is JSON text with sorted keys and no spaces (`JSONField`), so its id and type are matched literally.
    """
    if principal.user_id is not None:
        return ListenSession.user_id == principal.user_id
    return (
        ListenSession.user_id.is_null()
        & _contains(ListenSession.actor, f'"id":{json.dumps(principal.id)}')
        & _contains(ListenSession.actor, f'"type":{json.dumps(principal.kind)}')
    )


def not_own(principal: Principal) -> Any:
    """The negation of `own`, counting sessions without a user (SQL's NOT of a NULL comparison is not true)."""
    if principal.user_id is not None:
        return (ListenSession.user_id != principal.user_id) | ListenSession.user_id.is_null()
    return ~own(principal)


def visible(principal: Principal) -> Any:
    """SQL for `listen_sessions.visible`: the caller's own sessions, and with listen:manage those of its sites."""
    clause = own(principal)
    if principal.can(MANAGE):
        clause = clause | site_in_scope(ListenSession.site, principal.scope(MANAGE))
    return clause


def _text(q: str) -> Any:
    """`q` in the node's name, the user's name or the client's address."""
    needle = q.lower()
    nodes = Node.select(Node.id).where(_contains(peewee.fn.LOWER(Node.name), needle))
    users = User.select(User.id).where(_contains(peewee.fn.LOWER(User.username), needle))
    return functools.reduce(
        operator.or_,
        [
            _contains(peewee.fn.LOWER(ListenSession.client_address), needle),
            ListenSession.node_id.in_(nodes),
            ListenSession.user_id.in_(users),
        ],
    )


def _query(spec: ListSpec, request: ListRequest, principal: Principal, mine: bool | None) -> peewee.ModelSelect:
    """The sessions matching the request that the caller may see (not yet ordered or paged)."""
    selected = build_query(spec, request, ALL_SITES).where(visible(principal))
    if spec is ACTIVE_LIST and "state" not in request.filters:
        selected = selected.where(ListenSession.state.in_(OPEN_STATES))
    if request.q:
        selected = selected.where(_text(request.q))
    if mine is not None:
        selected = selected.where(own(principal) if mine else not_own(principal))
    return selected


def _rows(selected: peewee.ModelSelect, after: str | None, limit: int) -> list[Any]:
    """Up to `limit` sessions newest first (ids are time-ordered), after the id `after`."""
    if after is not None:
        selected = selected.where(ListenSession.id < after)
    return list(selected.order_by(ListenSession.id.desc()).limit(limit))


# -- names ----------------------------------------------------------------------------------------------------


def user_names(user_ids: Sequence[str | None]) -> dict[str, str]:
    wanted = sorted({u for u in user_ids if u})
    return {row.id: row.username for row in User.select(User.id, User.username).where(User.id.in_(wanted))} if wanted else {}


def _exported(rows: Sequence[ListenSession]) -> list[dict[str, Any]]:
    """Sessions as exported: the API shape with the user flattened into `user_id` and `user_name` for CSV."""
    items = to_api_many(list(rows))
    for item in items:
        user = item.get("user") or {}
        item["user_id"], item["user_name"] = user.get("id"), user.get("name")
    return items


# -- the routes' work ------------------------------------------------------------------------------------------


def session_page(spec: ListSpec, request: ListRequest, principal: Principal, mine: bool | None = None) -> Page:
    """One page newest first (ids are time-ordered) and the cursor of the next, or None."""
    rows = _rows(_query(spec, request, principal, mine), request.after, request.limit + 1)
    next_cursor = encode_cursor(rows[request.limit - 1].id) if len(rows) > request.limit else None
    return to_api_many(rows[: request.limit]), next_cursor


def export_batches(spec: ListSpec, request: ListRequest, principal: Principal, mine: bool | None) -> Callable[[str | None], Page]:
    """The next batch of every matching session after an id (for the streamed export)."""

    def next_batch(after: str | None) -> Page:
        rows = _rows(_query(spec, request, principal, mine), after, EXPORT_BATCH)
        return _exported(rows), rows[-1].id if len(rows) == EXPORT_BATCH else None

    return next_batch


def facet_counts(
    spec: ListSpec, request: ListRequest, principal: Principal, mine: bool | None, names: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Value counts of state, codec, node_id and user_id over the matching sessions (nodes and users with their names)."""
    unknown = sorted(set(names) - set(FACETS))
    if unknown:
        raise InvalidRequest("Unknown facet.", fields={"fields": f"no facet named {', '.join(unknown)}"})
    base = _query(spec, request, principal, mine)
    result: dict[str, list[dict[str, Any]]] = {}
    for name in [n for n in FACETS if not names or n in names]:
        field = getattr(ListenSession, name)
        counted = base.select(field, peewee.fn.COUNT(ListenSession.id)).group_by(field)
        pairs: list[tuple[Any, int]] = list(counted.tuples())  # type: ignore[arg-type]
        pairs.sort(key=lambda p: (-p[1], "" if p[0] is None else str(p[0])))
        result[name] = [{"value": value, "count": n} for value, n in pairs]
    labels: dict[str, Callable[[Sequence[Any]], dict[str, str]]] = {"node_id": node_names, "user_id": user_names}
    for name, lookup in labels.items():
        if name in result:
            found = lookup([entry["value"] for entry in result[name]])
            for entry in result[name]:
                entry["name"] = found.get(entry["value"]) if entry["value"] else None
    return result


def actions(principal: Principal, row: ListenSession) -> dict[str, dict[str, Any]]:
    """Which actions the caller may take on this session now, and why not."""
    if row.state == "terminated":
        allowed, reason = False, "the session has ended"
    elif is_own(row, principal) or manages(row, principal):
        allowed, reason = True, None
    else:
        allowed, reason = False, "needs listen:manage on the node's site, or your own session"
    return {"disconnect": {"allowed": allowed, "reason": reason}}


def session_detail(principal: Principal, session_id: str) -> dict[str, Any]:
    """One session the caller may see, with what it may do to it now."""
    row = get_visible(principal, session_id)
    return {**to_api_many([row])[0], "actions": actions(principal, row)}

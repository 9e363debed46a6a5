"""Channel maps: templates that name a node's physical inputs and group them into programmes,
and which template each node runs (with the one before, so a change can be rolled back).

Templates are fleet-wide; assignments belong to a node and follow its site. A caller limited
to some sites may change a template only while every node running it is inside those sites.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import ChannelMapAssignment, ChannelMapTemplate, Node, database_proxy
from hark_fleet.hub.errors import ApiError, Conflict, Forbidden, InvalidRequest, NotFound
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import (
    Filter,
    ListRequest,
    ListSpec,
    build_query,
    encode_cursor,
    get_scoped,
    site_in_scope,
)
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.hub.services.versioning import update_if_unchanged

MANAGE = "settings:manage"
MAX_CHANNELS = 64
MAX_INPUT = MAX_CHANNELS - 1
MAX_PROGRAMMES = 32
MAX_DESCRIPTION = 500
MAX_BULK = 500
CALIBRATION_RANGE_DB = (0.0, 200.0)
ROLES = ("L", "R", "C", "LFE", "Ls", "Rs", "mono")
SHARED_ROLES = frozenset({"mono"})  # roles a programme may hold more than once


# -- templates ---------------------------------------------------------------------------------


def template_to_api(template: ChannelMapTemplate) -> dict[str, Any]:
    return {
        "id": template.id,
        "name": template.name,
        "description": template.description,
        "channels": list(template.channels or []),
        "programmes": list(template.programmes or []),
        "channel_count": template.channel_count,
        "created_at": iso(template.created_at),
        "updated_at": iso(template.updated_at),
        "version": template.version,
    }


TEMPLATE_LIST = ListSpec(
    model=ChannelMapTemplate,
    serialize=template_to_api,
    filters=(
        Filter("name", ChannelMapTemplate.name, facet=False),
        Filter("channel_count", ChannelMapTemplate.channel_count, query.integer_between(1, MAX_CHANNELS)),
    ),
    search=(ChannelMapTemplate.name, ChannelMapTemplate.description),
    time_field=ChannelMapTemplate.updated_at,
    export_columns=(
        "id",
        "name",
        "description",
        "channel_count",
        "channels",
        "programmes",
        "created_at",
        "updated_at",
        "version",
    ),
)


def check_channels(channels: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The channels in stored form, and every problem with them (field path -> problem)."""
    problems: dict[str, str] = {}
    if not 1 <= len(channels) <= MAX_CHANNELS:
        problems["channels"] = f"1 to {MAX_CHANNELS} channels"
    clean: list[dict[str, Any]] = []
    names: set[str] = set()
    inputs: set[int] = set()
    low, high = CALIBRATION_RANGE_DB
    for i, channel in enumerate(channels):
        at = f"channels[{i}]"
        physical, name = channel["input"], channel["name"]
        calibration, role = channel.get("calibration_db"), channel.get("role")
        if not 0 <= physical <= MAX_INPUT:
            problems[f"{at}.input"] = f"a physical input from 0 to {MAX_INPUT}"
        elif physical in inputs:
            problems[f"{at}.input"] = f"input {physical} is already mapped by another channel"
        inputs.add(physical)
        if (why := text_problem(name, 32)) is not None:
            problems[f"{at}.name"] = why
        elif name in names:
            problems[f"{at}.name"] = f"another channel is named {name}"
        names.add(name)
        if calibration is not None and (not math.isfinite(calibration) or not low <= calibration <= high):
            problems[f"{at}.calibration_db"] = f"dB SPL at 0 dBFS, from {low:g} to {high:g}, or null"
        if role is not None and role not in ROLES:
            problems[f"{at}.role"] = f"one of {', '.join(ROLES)}, or null"
        clean.append(
            {
                "input": physical,
                "name": name,
                "calibration_db": None if calibration is None else float(calibration),
                "role": role,
            }
        )
    return clean, problems


def check_programmes(
    programmes: Sequence[dict[str, Any]], channels: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The programmes in stored form, checked against the template's channels."""
    problems: dict[str, str] = {}
    if len(programmes) > MAX_PROGRAMMES:
        problems["programmes"] = f"at most {MAX_PROGRAMMES} programmes"
    roles = {c["name"]: c.get("role") for c in channels}
    clean: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, programme in enumerate(programmes):
        at = f"programmes[{i}]"
        name, members = programme["name"], list(programme["channels"])
        if (why := text_problem(name, 64)) is not None:
            problems[f"{at}.name"] = why
        elif name in names:
            problems[f"{at}.name"] = f"another programme is named {name}"
        names.add(name)
        unknown = [m for m in members if m not in roles]
        repeated = sorted({m for m in members if members.count(m) > 1})
        held = [roles.get(m) for m in dict.fromkeys(members)]
        doubled = sorted({r for r in held if r is not None and r not in SHARED_ROLES and held.count(r) > 1})
        if not 1 <= len(members) <= MAX_CHANNELS:
            problems[f"{at}.channels"] = f"1 to {MAX_CHANNELS} channel names"
        elif unknown:
            problems[f"{at}.channels"] = f"no channel named {', '.join(unknown[:5])} in this template"
        elif repeated:
            problems[f"{at}.channels"] = f"{', '.join(repeated[:5])} listed more than once"
        elif doubled:
            problems[f"{at}.channels"] = f"more than one channel with the role {', '.join(doubled)}"
        clean.append({"name": name, "channels": members})
    return clean, problems


def _check_description(description: str, problems: dict[str, str]) -> None:
    if len(description) > MAX_DESCRIPTION:
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"


def _name_taken(name: str, except_id: str | None = None) -> bool:
    query = ChannelMapTemplate.select().where(ChannelMapTemplate.name == name)
    if except_id is not None:
        query = query.where(ChannelMapTemplate.id != except_id)
    return bool(query.exists())


def get_template(template_id: str) -> ChannelMapTemplate:
    template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == template_id)
    if template is None:
        raise NotFound(f"No channel-map template {template_id}.")
    return template


def _live_assignments(template_id: str) -> peewee.ModelSelect[ChannelMapAssignment]:
    """Current assignments of a template to nodes that still exist."""
    return (
        ChannelMapAssignment.select(ChannelMapAssignment.node_id, Node.site)
        .join(Node, on=(Node.id == ChannelMapAssignment.node_id))
        .where(ChannelMapAssignment.template_id == template_id)
    )


def assigned_node_ids(template_id: str) -> list[str]:
    return [row.node_id for row in _live_assignments(template_id).order_by(ChannelMapAssignment.node_id)]


def _outside_scope(template_id: str, scope: SiteScope) -> int:
    """How many nodes running the template lie outside the caller's sites."""
    if scope.everywhere:
        return 0
    if scope.sites is None:  # every site but the hidden ones
        return int(_live_assignments(template_id).where(Node.site.in_(sorted(scope.hidden))).count())
    sites = sorted(scope.sites)
    return int(_live_assignments(template_id).where(Node.site.is_null() | Node.site.not_in(sites)).count())


def _template_actions(template: ChannelMapTemplate, scope: SiteScope) -> tuple[int, dict[str, dict[str, Any]]]:
    assigned = int(_live_assignments(template.id).count())
    outside = _outside_scope(template.id, scope)
    beyond = f"assigned to {outside} nodes outside your sites" if outside else None
    in_use = f"assigned to {assigned} nodes" if assigned else None
    return assigned, {
        "update": {"allowed": beyond is None, "reason": beyond},
        "delete": {"allowed": beyond is None and in_use is None, "reason": beyond or in_use},
    }


def template_detail(scope: SiteScope, template_id: str) -> dict[str, Any]:
    """A template, how many nodes run it, and what the caller may do to it now."""
    template = get_template(template_id)
    assigned, actions = _template_actions(template, scope)
    return {**template_to_api(template), "assigned_nodes": assigned, "actions": actions}


def _require_in_scope(template: ChannelMapTemplate, scope: SiteScope, verb: str) -> None:
    outside = _outside_scope(template.id, scope)
    if outside:
        raise Forbidden(f"Cannot {verb} this template: it is assigned to {outside} nodes outside your sites.", required=MANAGE)


def create_template(
    actor: Actor,
    name: str,
    description: str,
    channels: Sequence[dict[str, Any]],
    programmes: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """A new template, checked whole: every problem is named in one 400."""
    clean_channels, problems = check_channels(channels)
    clean_programmes, programme_problems = check_programmes(programmes, clean_channels)
    problems |= programme_problems
    if (why := text_problem(name, 100)) is not None:
        problems["name"] = why
    _check_description(description, problems)
    if problems:
        raise InvalidRequest("The channel-map template is invalid.", fields=problems)
    if _name_taken(name):
        raise Conflict(f"A channel-map template named {name} exists.")
    now = utcnow()
    try:
        with database_proxy.atomic():
            template = ChannelMapTemplate.create(
                id=new_id("cmt"),
                name=name,
                description=description,
                channels=clean_channels,
                programmes=clean_programmes,
                channel_count=len(clean_channels),
                created_at=now,
                updated_at=now,
                version=1,
            )
            after = template_to_api(template)
            record(
                actor, "channel_map.template.create", permission=MANAGE, target=("channel_map_template", template.id), after=after
            )
    except peewee.IntegrityError as err:
        raise Conflict(f"A channel-map template named {name} exists.") from err
    return after


def update_template(
    actor: Actor, scope: SiteScope, template_id: str, changes: dict[str, Any]
) -> tuple[dict[str, Any], list[str], list[FleetEvent]]:
    """Change a template; the nodes running it (to be told) and the events.

    `changes` may hold `version`: the version the caller last read (409 when it moved on).
    """
    template = get_template(template_id)
    _require_in_scope(template, scope, "change")
    if "version" in changes and changes["version"] != template.version:
        raise Conflict(f"The template changed meanwhile (version {template.version}); read it again.")
    before = template_to_api(template)
    problems: dict[str, str] = {}
    channels: list[dict[str, Any]] = before["channels"]
    if "channels" in changes:
        channels, problems = check_channels(changes["channels"])
    programmes, programme_problems = check_programmes(changes.get("programmes", before["programmes"]), channels)
    problems |= programme_problems
    fields: dict[str, Any] = {}
    if "name" in changes:
        if (why := text_problem(changes["name"], 100)) is not None:
            problems["name"] = why
        fields["name"] = changes["name"]
    if "description" in changes:
        _check_description(changes["description"], problems)
        fields["description"] = changes["description"]
    if problems:
        raise InvalidRequest("The channel-map template is invalid.", fields=problems)
    if "name" in fields and _name_taken(fields["name"], template.id):
        raise Conflict(f"A channel-map template named {fields['name']} exists.")
    fields |= {"channels": channels, "programmes": programmes, "channel_count": len(channels)}
    if all(before[k] == v for k, v in fields.items()):
        return before, [], []  # nothing changes: no new version, nothing to tell the nodes
    try:
        with database_proxy.atomic():
            update_if_unchanged(ChannelMapTemplate, template, fields, "template")
            after = template_to_api(get_template(template.id))
            record(
                actor,
                "channel_map.template.update",
                permission=MANAGE,
                target=("channel_map_template", template.id),
                before=before,
                after=after,
            )
            nodes = assigned_node_ids(template.id)
    except peewee.IntegrityError as err:
        raise Conflict(f"A channel-map template named {fields.get('name')} exists.") from err
    event = FleetEvent(
        "channel_map.template_updated", None, {"template_id": template.id, "version": after["version"], "node_ids": nodes}
    )
    return after, nodes, [event]


def delete_template(actor: Actor, scope: SiteScope, template_id: str) -> None:
    """Delete a template no node runs (409 while any does); it stops being anyone's rollback target."""
    template = get_template(template_id)
    _require_in_scope(template, scope, "delete")
    before = template_to_api(template)
    with database_proxy.atomic():
        assigned = int(_live_assignments(template.id).count())
        if assigned:
            raise Conflict(
                f"The template is assigned to {assigned} nodes; assign them another template first.", assigned_nodes=assigned
            )
        # Rows of deleted nodes still naming it go; others forget it as their rollback target.
        ChannelMapAssignment.delete().where(ChannelMapAssignment.template_id == template.id).execute()
        ChannelMapAssignment.update(previous_template_id=None).where(
            ChannelMapAssignment.previous_template_id == template.id
        ).execute()
        template.delete_instance()
        record(
            actor, "channel_map.template.delete", permission=MANAGE, target=("channel_map_template", template.id), before=before
        )


# -- assignments ---------------------------------------------------------------------------------


def _assignment_api(row: ChannelMapAssignment, node: Node, template: ChannelMapTemplate | None) -> dict[str, Any]:
    return {
        "node_id": row.node_id,
        "node_name": node.name,
        "site": node.site,
        "template_id": row.template_id,
        "template_name": template.name if template is not None else None,
        "template_version": template.version if template is not None else None,
        "previous_template_id": row.previous_template_id,
        "assigned_at": iso(row.assigned_at),
        "assigned_by": row.assigned_by or {},
    }


def _listed_assignment(row: Any) -> dict[str, Any]:
    """A row of the joined list query (node and template columns come as aliases)."""
    return {
        "node_id": row.node_id,
        "node_name": row.node_name,
        "site": row.node_site,
        "template_id": row.template_id,
        "template_name": row.template_name,
        "template_version": row.template_version,
        "previous_template_id": row.previous_template_id,
        "assigned_at": iso(row.assigned_at),
        "assigned_by": row.assigned_by or {},
    }


# The filters only: the list joins each row to its node (for the site) and template, below.
ASSIGNMENT_LIST = ListSpec(
    model=ChannelMapAssignment,
    serialize=_listed_assignment,
    filters=(
        Filter("node_id", ChannelMapAssignment.node_id),
        Filter("template_id", ChannelMapAssignment.template_id),
        Filter("site", Node.site),
    ),
    time_field=ChannelMapAssignment.assigned_at,
)


def list_assignments(request: ListRequest, scope: SiteScope) -> tuple[list[dict[str, Any]], str | None]:
    """Nodes that run a template, in node id order, limited to the caller's sites through each node's site."""
    query = (
        build_query(ASSIGNMENT_LIST, request)
        .select_extend(
            Node.name.alias("node_name"),
            Node.site.alias("node_site"),
            ChannelMapTemplate.name.alias("template_name"),
            ChannelMapTemplate.version.alias("template_version"),
        )
        .join(Node, on=(Node.id == ChannelMapAssignment.node_id))
        .switch(ChannelMapAssignment)
        .join(ChannelMapTemplate, on=(ChannelMapTemplate.id == ChannelMapAssignment.template_id))
    )
    if not scope.everywhere:
        query = query.where(site_in_scope(Node.site, scope))
    if request.after is not None:
        query = query.where(ChannelMapAssignment.node_id > request.after)
    rows: list[Any] = list(query.order_by(ChannelMapAssignment.node_id).limit(request.limit + 1).objects())
    next_cursor = encode_cursor(rows[request.limit - 1].node_id) if len(rows) > request.limit else None
    return [_listed_assignment(r) for r in rows[: request.limit]], next_cursor


def _node(scope: SiteScope, node_id: str) -> Node:
    node: Node = get_scoped(Node, node_id, Node.site, scope)
    return node


def _current(node: Node) -> tuple[ChannelMapAssignment | None, dict[str, Any] | None]:
    row = ChannelMapAssignment.get_or_none(ChannelMapAssignment.node_id == node.id)
    if row is None:
        return None, None
    template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == row.template_id) if row.template_id else None
    return row, _assignment_api(row, node, template)


def _assignment_actions(row: ChannelMapAssignment | None) -> dict[str, dict[str, Any]]:
    no_previous = None if row is not None and row.previous_template_id else "there is no previous assignment"
    no_current = None if row is not None and row.template_id else "the node has no template"
    return {
        "assign": {"allowed": True, "reason": None},
        "rollback": {"allowed": no_previous is None, "reason": no_previous},
        "unassign": {"allowed": no_current is None, "reason": no_current},
    }


def assignment_detail(scope: SiteScope, node_id: str) -> dict[str, Any]:
    """A node's assignment (template fields null when it has none) and what may be done now."""
    node = _node(scope, node_id)
    row, current = _current(node)
    if current is None:
        current = {
            "node_id": node.id,
            "node_name": node.name,
            "site": node.site,
            "template_id": None,
            "template_name": None,
            "template_version": None,
            "previous_template_id": None,
            "assigned_at": None,
            "assigned_by": None,
        }
    return {**current, "actions": _assignment_actions(row)}


def _event(change: str, site: str | None, after: dict[str, Any]) -> FleetEvent:
    return FleetEvent("channel_map.assigned", site, {**after, "change": change})


def _set(
    actor: Actor, node: Node, row: ChannelMapAssignment | None, template_id: str | None, previous: str | None
) -> dict[str, Any]:
    """Write the node's assignment (inside the caller's transaction) and return it."""
    fields = {
        "template_id": template_id,
        "previous_template_id": previous,
        "assigned_at": utcnow(),
        "assigned_by": {"type": actor.type, "id": actor.id, "name": actor.name},
    }
    if row is None:
        ChannelMapAssignment.create(node_id=node.id, **fields)
    else:
        ChannelMapAssignment.update(**fields).where(ChannelMapAssignment.node_id == node.id).execute()
    _, after = _current(node)
    assert after is not None
    return after


def _template_named_in_body(template_id: str) -> ChannelMapTemplate:
    template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == template_id)
    if template is None:
        raise InvalidRequest("No such channel-map template.", fields={"template_id": "no channel-map template has this id"})
    return template


def assign(actor: Actor, scope: SiteScope, node_id: str, template_id: str) -> tuple[dict[str, Any], bool, list[FleetEvent]]:
    """Give the node a template, keeping the one it had for rollback; the assignment, whether it changed, the events."""
    template = _template_named_in_body(template_id)
    node = _node(scope, node_id)
    try:
        with database_proxy.atomic():
            row, before = _current(node)
            if row is not None and row.template_id == template.id and before is not None:
                return {**before, "actions": _assignment_actions(row)}, False, []
            after = _set(actor, node, row, template.id, row.template_id if row is not None else None)
            record(actor, "channel_map.assign", permission=MANAGE, target=("node", node.id), before=before, after=after)
    except peewee.IntegrityError as err:
        raise Conflict("The node's assignment changed meanwhile; try again.") from err
    row, _ = _current(node)
    return {**after, "actions": _assignment_actions(row)}, True, [_event("assign", node.site, after)]


def rollback(actor: Actor, scope: SiteScope, node_id: str) -> tuple[dict[str, Any], list[FleetEvent]]:
    """Back to the node's previous assignment (which becomes the one to roll back to); 409 when there is none."""
    node = _node(scope, node_id)
    with database_proxy.atomic():
        row, before = _current(node)
        if row is None or row.previous_template_id is None:
            raise Conflict(f"Node {node.id} has no previous channel-map assignment to roll back to.")
        if ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == row.previous_template_id) is None:
            raise Conflict("The previous template no longer exists.")
        after = _set(actor, node, row, row.previous_template_id, row.template_id)
        record(actor, "channel_map.rollback", permission=MANAGE, target=("node", node.id), before=before, after=after)
    row, _ = _current(node)
    return {**after, "actions": _assignment_actions(row)}, [_event("rollback", node.site, after)]


def unassign(actor: Actor, scope: SiteScope, node_id: str) -> list[FleetEvent]:
    """Take the node's template away (it stays the rollback target); 404 when the node has none."""
    node = _node(scope, node_id)
    with database_proxy.atomic():
        row, before = _current(node)
        if row is None or row.template_id is None:
            raise NotFound(f"Node {node.id} has no channel-map assignment.")
        after = _set(actor, node, row, None, row.template_id)
        record(actor, "channel_map.unassign", permission=MANAGE, target=("node", node.id), before=before, after=after)
    return [_event("unassign", node.site, after)]


def bulk_assign(
    actor: Actor, scope: SiteScope, node_ids: Sequence[str], template_id: str
) -> tuple[list[dict[str, Any]], list[str], list[FleetEvent]]:
    """One template for many nodes; each node answers on its own. The results, the nodes that changed, the events."""
    if not 1 <= len(node_ids) <= MAX_BULK:
        raise InvalidRequest("Too many or no node ids.", fields={"node_ids": f"1 to {MAX_BULK} node ids"})
    _template_named_in_body(template_id)
    results: list[dict[str, Any]] = []
    changed: list[str] = []
    events: list[FleetEvent] = []
    for node_id in dict.fromkeys(node_ids):
        try:
            after, did_change, caused = assign(actor, scope, node_id, template_id)
        except ApiError as err:
            results.append({"node_id": node_id, "ok": False, "error": {"code": err.code, "message": err.message}})
            continue
        results.append({"node_id": node_id, "ok": True, "changed": did_change, "assignment": after})
        if did_change:
            changed.append(node_id)
        events += caused
    return results, changed, events


def agent_assignment(node_id: str) -> dict[str, Any] | None:
    """What a node should apply: its template in full, or None when it has none."""
    row = ChannelMapAssignment.get_or_none(ChannelMapAssignment.node_id == node_id)
    if row is None or row.template_id is None:
        return None
    template = ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == row.template_id)
    if template is None:
        return None
    return {
        "node_id": node_id,
        "template_id": template.id,
        "assigned_at": iso(row.assigned_at),
        "template": template_to_api(template),
    }

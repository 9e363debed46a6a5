"""Channel-map plans: stage a template change (or an unassign) across many nodes, show each node's diff,
apply it with each node's confirmation, and roll back the nodes that refuse or do not confirm in time
(or the whole plan).

A plan's target (sites and tags narrow together; node ids add nodes) is resolved to nodes in the
caller's sites when it is staged; each node's row keeps the template it runs and the one it gets.
Applying assigns the template to each node through the ordinary assignment code (audited per node,
told on `cmd/config` by the caller); each node then reports `ConfigApplied` on its `applied` topic
(`confirm_applied`). The ingest sweep (`sweep`) marks the nodes that did not confirm within
`timeout_s` as `timed_out`, gives them and the ones that refused their before template back, and
finishes the plan: `applied` when every node confirmed, `partially_applied` otherwise.

Scope: a plan belongs to the one site all its nodes are in (else to none); a site-limited caller
sees the plans of its sites and the ones it made, and a plan of theirs never reaches another site.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import peewee
from hark_fleet.hub.auth.principal import ALL_SITES, SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import (
    ChannelMapAssignment,
    ChannelMapPlan,
    ChannelMapPlanNode,
    ChannelMapTemplate,
    Node,
    database_proxy,
)
from hark_fleet.hub.errors import ApiError, Conflict, InvalidRequest
from hark_fleet.hub.events import FleetEvent
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import channel_maps
from hark_fleet.hub.services.audit import SYSTEM, Actor, record
from hark_fleet.hub.services.channel_map_diff import template_diff, template_side
from hark_fleet.hub.services.listing import Filter, ListRequest, ListSpec, build_query, get_scoped, one_of
from hark_fleet.hub.services.nodes import NODE_LIST
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.protocol.watchdog import ConfigApplied

MANAGE = "settings:manage"
STATES = ("staged", "applying", "applied", "partially_applied", "rolling_back", "rolled_back", "cancelled")
NODE_STATES = ("pending", "sent", "confirmed", "failed", "timed_out", "rolled_back")
FINISHED = frozenset({"applied", "partially_applied", "rolled_back", "cancelled"})
ROLLBACK_FROM = frozenset({"applying", "applied", "partially_applied"})
IN_FLIGHT = ("applying", "rolling_back")
TIMEOUT_RANGE_S = (5.0, 3600.0)
DEFAULT_TIMEOUT_S = 120.0
MAX_NAME = 100
MAX_DESCRIPTION = 500
MAX_TARGET_ITEMS = 500
MAX_NODES = 500


# -- serializing -------------------------------------------------------------------------------


def _template(template_id: str | None) -> ChannelMapTemplate | None:
    return ChannelMapTemplate.get_or_none(ChannelMapTemplate.id == template_id) if template_id else None


def _counts(plan_id: str) -> dict[str, int]:
    counts = dict.fromkeys(NODE_STATES, 0)
    rows: Any = (
        ChannelMapPlanNode.select(ChannelMapPlanNode.state, peewee.fn.COUNT(ChannelMapPlanNode.node_id))
        .where(ChannelMapPlanNode.plan_id == plan_id)
        .group_by(ChannelMapPlanNode.state)
        .tuples()
    )
    for state, n in rows:
        counts[state] = n
    return {**counts, "total": sum(counts.values())}


def plan_to_api(plan: ChannelMapPlan) -> dict[str, Any]:
    template = _template(plan.template_id)
    return {
        "id": plan.id,
        "name": plan.name,
        "description": plan.description,
        "template_id": plan.template_id,
        "template_name": template.name if template is not None else None,
        "template_version": template.version if template is not None else None,
        "target": plan.target or {"sites": [], "tags": [], "node_ids": []},
        "state": plan.state,
        "timeout_s": plan.timeout_s,
        "site": plan.site,
        "counts": _counts(plan.id),
        "created_by": plan.created_by or {},
        "created_at": iso(plan.created_at),
        "updated_at": iso(plan.updated_at),
        "applied_at": iso(plan.applied_at),
        "rollback_at": iso(plan.rollback_at),
        "finished_at": iso(plan.finished_at),
        "version": plan.version,
    }


def _deadline(row: ChannelMapPlanNode, timeout_s: float) -> datetime | None:
    if row.state == "sent" and row.sent_at is not None:
        return row.sent_at + timedelta(seconds=timeout_s)
    if row.rolled_back_at is not None and row.rollback_confirmed_at is None:
        return row.rolled_back_at + timedelta(seconds=timeout_s)
    return None


def node_row_to_api(row: ChannelMapPlanNode, timeout_s: float) -> dict[str, Any]:
    return {
        "node_id": row.node_id,
        "node_name": row.node_name,
        "site": row.site,
        "before_template_id": row.before_template_id,
        "after_template_id": row.after_template_id,
        "changes": row.before_template_id != row.after_template_id,
        "state": row.state,
        "error": row.error,
        "sent_at": iso(row.sent_at),
        "confirmed_at": iso(row.confirmed_at),
        "deadline": iso(_deadline(row, timeout_s)),
        "rolled_back_at": iso(row.rolled_back_at),
        "rollback_confirmed_at": iso(row.rollback_confirmed_at),
    }


PLAN_LIST = ListSpec(
    model=ChannelMapPlan,
    serialize=plan_to_api,
    filters=(
        Filter("state", ChannelMapPlan.state, one_of(STATES)),
        Filter("template_id", ChannelMapPlan.template_id),
        Filter("site", ChannelMapPlan.site),
        Filter("name", ChannelMapPlan.name, facet=False),
    ),
    search=(ChannelMapPlan.name, ChannelMapPlan.description),
    time_field=ChannelMapPlan.created_at,
    site_field=ChannelMapPlan.site,
    owner_field=ChannelMapPlan.created_by_id,
    export_columns=(
        "id",
        "name",
        "description",
        "template_id",
        "template_name",
        "state",
        "timeout_s",
        "site",
        "target",
        "counts",
        "created_at",
        "updated_at",
        "applied_at",
        "rollback_at",
        "finished_at",
        "version",
    ),
    descending=True,
)


def _rows(plan_id: str) -> list[ChannelMapPlanNode]:
    query = ChannelMapPlanNode.select().where(ChannelMapPlanNode.plan_id == plan_id).order_by(ChannelMapPlanNode.node_id)
    return list(query)


def get_plan(scope: SiteScope, plan_id: str) -> ChannelMapPlan:
    """A plan the caller may see (its site's, or its own), else 404."""
    plan: ChannelMapPlan = get_scoped(ChannelMapPlan, plan_id, PLAN_LIST.site_field, scope, PLAN_LIST.owner_field)
    return plan


def _actions(plan: ChannelMapPlan, node_count: int) -> dict[str, dict[str, Any]]:
    staged = None if plan.state == "staged" else f"the plan is {plan.state}, not staged"
    apply_why = staged or ("the plan reaches no node" if node_count == 0 else None)
    rollback_why = None if plan.state in ROLLBACK_FROM else f"the plan is {plan.state}"
    delete_why = None if plan.state == "staged" or plan.state in FINISHED else "the plan is in progress"
    return {
        "update": {"allowed": staged is None, "reason": staged},
        "apply": {"allowed": apply_why is None, "reason": apply_why},
        "rollback": {"allowed": rollback_why is None, "reason": rollback_why},
        "cancel": {"allowed": staged is None, "reason": staged},
        "delete": {"allowed": delete_why is None, "reason": delete_why},
    }


def _detail(plan: ChannelMapPlan) -> dict[str, Any]:
    rows = _rows(plan.id)
    return {
        **plan_to_api(plan),
        "nodes": [node_row_to_api(r, plan.timeout_s) for r in rows],
        "actions": _actions(plan, len(rows)),
    }


def plan_detail(scope: SiteScope, plan_id: str) -> dict[str, Any]:
    """A plan with its nodes (and each one's state) and what may be done now."""
    return _detail(get_plan(scope, plan_id))


# -- checking and resolving a target -------------------------------------------------------------


def _check_fields(fields: Mapping[str, Any], problems: dict[str, str]) -> None:
    if "name" in fields and (why := text_problem(fields["name"], MAX_NAME)) is not None:
        problems["name"] = why
    if "description" in fields and len(fields["description"]) > MAX_DESCRIPTION:
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"
    if "timeout_s" in fields:
        low, high = TIMEOUT_RANGE_S
        value = fields["timeout_s"]
        if isinstance(value, bool) or not math.isfinite(value) or not low <= value <= high:
            problems["timeout_s"] = f"from {low:g} to {high:g} s"
    if "template_id" in fields and fields["template_id"] is not None and _template(fields["template_id"]) is None:
        problems["template_id"] = "no channel-map template has this id (null unassigns)"


def _clean_target(target: Mapping[str, Sequence[str]], problems: dict[str, str]) -> dict[str, list[str]]:
    clean = {key: list(dict.fromkeys(target.get(key) or [])) for key in ("sites", "tags", "node_ids")}
    for key, values in clean.items():
        if len(values) > MAX_TARGET_ITEMS:
            problems[f"target.{key}"] = f"at most {MAX_TARGET_ITEMS}"
        elif any(not v or len(v) > 200 for v in values):
            problems[f"target.{key}"] = "1-200 characters each"
    if not any(clean.values()):
        problems["target"] = "name at least one site, tag or node id"
    return clean


def resolve_target(scope: SiteScope, target: Mapping[str, list[str]], problems: dict[str, str]) -> list[Node]:
    """The nodes a target reaches inside the caller's sites, in id order.

    Nodes in any of `sites` (if given) carrying any of `tags` (if given), plus every node of
    `node_ids`. A site outside the caller's sites, or a node id the caller cannot see, is a problem.
    """
    found: dict[str, Node] = {}
    if scope.sites is not None:
        outside = [s for s in target["sites"] if s not in scope.sites]
        if outside:
            problems["target.sites"] = f"not among your sites: {', '.join(outside[:5])}"
    if target["sites"] or target["tags"]:
        filters: dict[str, tuple[str, ...]] = {}
        if target["sites"]:
            filters["site"] = tuple(target["sites"])
        if target["tags"]:
            filters["tag"] = tuple(target["tags"])
        request = ListRequest(filters, None, None, None, MAX_NODES, None)
        matched: Any = build_query(NODE_LIST, request, scope).order_by(Node.id).limit(MAX_NODES + 1)
        for node in matched:
            found[node.id] = node
    if target["node_ids"]:
        nodes = Node.select().where(Node.id.in_(target["node_ids"]))
        if scope.sites is not None:
            nodes = nodes.where(Node.site.in_(sorted(scope.sites)))
        by_id = {n.id: n for n in nodes}
        missing = [i for i in target["node_ids"] if i not in by_id]
        if missing:
            problems["target.node_ids"] = f"no such node: {', '.join(missing[:5])}"
        found.update(by_id)
    if len(found) > MAX_NODES:
        problems["target"] = f"reaches more than {MAX_NODES} nodes; narrow it"
    elif not found and "target" not in problems:
        problems["target"] = "reaches no node in your sites"
    return [found[k] for k in sorted(found)]


def _plan_site(nodes: Iterable[Node], target: Mapping[str, list[str]]) -> str | None:
    sites = {n.site for n in nodes} | set(target["sites"])
    if len(sites) == 1:
        (site,) = sites
        return site
    return None


def _current_template_id(node_id: str) -> str | None:
    row = ChannelMapAssignment.get_or_none(ChannelMapAssignment.node_id == node_id)
    return row.template_id if row is not None else None


def _write_rows(plan_id: str, template_id: str | None, nodes: Sequence[Node]) -> None:
    ChannelMapPlanNode.delete().where(ChannelMapPlanNode.plan_id == plan_id).execute()
    for node in nodes:
        ChannelMapPlanNode.create(
            plan_id=plan_id,
            node_id=node.id,
            node_name=node.name,
            site=node.site,
            before_template_id=_current_template_id(node.id),
            after_template_id=template_id,
            state="pending",
        )


# -- stage, change, cancel, delete ---------------------------------------------------------------


def stage_plan(actor: Actor, scope: SiteScope, fields: dict[str, Any]) -> dict[str, Any]:
    """A new staged plan: its target resolved to nodes now, each with its template before and after."""
    problems: dict[str, str] = {}
    fields = {"description": "", "timeout_s": DEFAULT_TIMEOUT_S, "template_id": None, **fields}
    _check_fields(fields, problems)
    target = _clean_target(fields["target"], problems)
    nodes = [] if "target" in problems else resolve_target(scope, target, problems)
    if problems:
        raise InvalidRequest("The channel-map plan is invalid.", fields=problems)
    now = utcnow()
    with database_proxy.atomic():
        plan = ChannelMapPlan.create(
            id=new_id("cmp"),
            name=fields["name"],
            description=fields["description"],
            template_id=fields["template_id"],
            target=target,
            state="staged",
            timeout_s=float(fields["timeout_s"]),
            site=_plan_site(nodes, target),
            created_by={"type": actor.type, "id": actor.id, "name": actor.name},
            created_by_id=actor.id,
            created_at=now,
            updated_at=now,
            version=1,
        )
        _write_rows(plan.id, plan.template_id, nodes)
        after = _detail(plan)
        record(actor, "channel_map_plan.stage", permission=MANAGE, target=("channel_map_plan", plan.id), after=after)
    return after


def update_plan(actor: Actor, scope: SiteScope, plan_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change a staged plan (a new target is resolved again); `version`, if given, must be the current one (409)."""
    plan = get_plan(scope, plan_id)
    if "version" in changes and changes["version"] != plan.version:
        raise Conflict(f"The plan changed meanwhile (version {plan.version}); read it again.")
    if plan.state != "staged":
        raise Conflict(f"The plan is {plan.state}: only a staged plan can be changed.")
    problems: dict[str, str] = {}
    _check_fields(changes, problems)
    nodes: list[Node] | None = None
    target = plan.target
    if "target" in changes:
        target = _clean_target(changes["target"], problems)
        if "target" not in problems:
            nodes = resolve_target(scope, target, problems)
    if problems:
        raise InvalidRequest("The channel-map plan is invalid.", fields=problems)
    before = _detail(plan)
    fields: dict[str, Any] = {k: changes[k] for k in ("name", "description", "template_id") if k in changes}
    if "timeout_s" in changes:
        fields["timeout_s"] = float(changes["timeout_s"])
    if nodes is not None:
        fields |= {"target": target, "site": _plan_site(nodes, target)}
    if not fields:
        return before
    with database_proxy.atomic():
        updated = (
            ChannelMapPlan.update(**fields, updated_at=utcnow(), version=ChannelMapPlan.version + 1)
            .where(ChannelMapPlan.id == plan.id, ChannelMapPlan.version == plan.version, ChannelMapPlan.state == "staged")
            .execute()
        )
        if not updated:
            raise Conflict("The plan changed meanwhile; read it again.")
        plan = ChannelMapPlan.get_by_id(plan.id)
        if nodes is not None:
            _write_rows(plan.id, plan.template_id, nodes)
        elif "template_id" in fields:
            ChannelMapPlanNode.update(after_template_id=plan.template_id).where(ChannelMapPlanNode.plan_id == plan.id).execute()
        after = _detail(plan)
        record(
            actor, "channel_map_plan.update", permission=MANAGE, target=("channel_map_plan", plan.id), before=before, after=after
        )
    return after


def _set_state(plan: ChannelMapPlan, state: str, **fields: Any) -> ChannelMapPlan:
    ChannelMapPlan.update(state=state, updated_at=utcnow(), version=ChannelMapPlan.version + 1, **fields).where(
        ChannelMapPlan.id == plan.id
    ).execute()
    updated: ChannelMapPlan = ChannelMapPlan.get_by_id(plan.id)
    return updated


def cancel_plan(actor: Actor, scope: SiteScope, plan_id: str) -> dict[str, Any]:
    """A staged plan that will not be applied (kept, for the record)."""
    plan = get_plan(scope, plan_id)
    if plan.state != "staged":
        raise Conflict(f"The plan is {plan.state}: only a staged plan can be cancelled.")
    before = _detail(plan)
    with database_proxy.atomic():
        plan = _set_state(plan, "cancelled", finished_at=utcnow())
        after = _detail(plan)
        record(
            actor, "channel_map_plan.cancel", permission=MANAGE, target=("channel_map_plan", plan.id), before=before, after=after
        )
    return after


def delete_plan(actor: Actor, scope: SiteScope, plan_id: str) -> None:
    """Delete a staged or finished plan; one in progress answers 409."""
    plan = get_plan(scope, plan_id)
    if plan.state != "staged" and plan.state not in FINISHED:
        raise Conflict(f"The plan is {plan.state}; roll it back or wait until it finishes.")
    before = _detail(plan)
    with database_proxy.atomic():
        ChannelMapPlanNode.delete().where(ChannelMapPlanNode.plan_id == plan.id).execute()
        ChannelMapPlan.delete().where(ChannelMapPlan.id == plan.id).execute()
        record(actor, "channel_map_plan.delete", permission=MANAGE, target=("channel_map_plan", plan.id), before=before)


# -- diff --------------------------------------------------------------------------------------


def plan_diff(scope: SiteScope, plan_id: str) -> dict[str, Any]:
    """Per node: the template it runs now and the plan's, and what would change; nothing is applied."""
    plan = get_plan(scope, plan_id)
    planned = _template(plan.template_id)
    templates: dict[str | None, ChannelMapTemplate | None] = {None: None}
    nodes = []
    for row in _rows(plan.id):
        current_id = _current_template_id(row.node_id)
        if current_id not in templates:
            templates[current_id] = _template(current_id)
        current = templates[current_id]
        changes = (current.id if current is not None else None) != plan.template_id
        nodes.append(
            {
                "node_id": row.node_id,
                "node_name": row.node_name,
                "site": row.site,
                "state": row.state,
                "current": template_side(current),
                "planned": template_side(planned),
                "changes": changes,
                **template_diff(current, planned),
            }
        )
    return {
        "plan_id": plan.id,
        "template_id": plan.template_id,
        "nodes": nodes,
        "summary": {"nodes": len(nodes), "changing": sum(1 for n in nodes if n["changes"])},
    }


# -- apply, confirm, time out, roll back -----------------------------------------------------------


def _give(actor: Actor, scope: SiteScope, node_id: str, template_id: str | None) -> tuple[bool, list[FleetEvent]]:
    """Assign `template_id` (None: unassign) to the node through the assignment code; whether it changed, the events."""
    if template_id is None:
        if _current_template_id(node_id) is None:
            return False, []
        return True, channel_maps.unassign(actor, scope, node_id)
    _, changed, events = channel_maps.assign(actor, scope, node_id, template_id)
    return changed, events


def _busy_elsewhere(plan: ChannelMapPlan, node_ids: list[str]) -> list[str]:
    """Other plans in flight that hold any of these nodes."""
    query = (
        ChannelMapPlanNode.select(ChannelMapPlanNode.plan_id)
        .join(ChannelMapPlan, on=(ChannelMapPlan.id == ChannelMapPlanNode.plan_id))
        .where(
            ChannelMapPlanNode.node_id.in_(node_ids),
            ChannelMapPlan.state.in_(IN_FLIGHT),
            ChannelMapPlan.id != plan.id,
        )
        .distinct()
    )
    return sorted(r.plan_id for r in query)


def apply_plan(
    actor: Actor, scope: SiteScope, plan_id: str, version: int | None = None
) -> tuple[dict[str, Any], list[str], list[FleetEvent]]:
    """Assign the plan's template to each node; the plan, the nodes to tell on `cmd/config`, the events.

    A node already running the template is confirmed at once; a node the assignment refuses (gone,
    outside the caller's sites) fails at once; the others are `sent` and must confirm within `timeout_s`.
    """
    plan = get_plan(scope, plan_id)
    if version is not None and version != plan.version:
        raise Conflict(f"The plan changed meanwhile (version {plan.version}); read it again.")
    if plan.state != "staged":
        raise Conflict(f"The plan is {plan.state}: only a staged plan can be applied.")
    if plan.template_id is not None and _template(plan.template_id) is None:
        raise Conflict("The plan's template no longer exists; change the plan's template.")
    rows = _rows(plan.id)
    if not rows:
        raise Conflict("The plan reaches no node; change its target.")
    busy = _busy_elsewhere(plan, [r.node_id for r in rows])
    if busy:
        raise Conflict(f"Plan {', '.join(busy[:5])} is applying to some of these nodes; wait for it.", plans=busy)
    before = _detail(plan)
    told: list[str] = []
    events: list[FleetEvent] = []
    now = utcnow()
    with database_proxy.atomic():
        taken = (
            ChannelMapPlan.update(state="applying", applied_at=now, updated_at=now, version=ChannelMapPlan.version + 1)
            .where(ChannelMapPlan.id == plan.id, ChannelMapPlan.state == "staged", ChannelMapPlan.version == plan.version)
            .execute()
        )
        if not taken:
            raise Conflict("The plan changed meanwhile; read it again.")
        for row in rows:
            current = _current_template_id(row.node_id)
            fields: dict[str, Any] = {"before_template_id": current, "error": None}
            try:
                changed, caused = _give(actor, scope, row.node_id, plan.template_id)
            except ApiError as err:
                fields |= {"state": "failed", "error": err.message}
            else:
                if changed:
                    fields |= {"state": "sent", "sent_at": now}
                    told.append(row.node_id)
                    events += caused
                else:
                    fields |= {"state": "confirmed", "confirmed_at": now, "error": None}
            _update_row(row, **fields)
            if fields["state"] == "failed":
                _audit_node(actor, plan, row.node_id, "failed", fields["error"])
        plan = _finish_if_done(ChannelMapPlan.get_by_id(plan.id), now)
        after = _detail(plan)
        record(
            actor, "channel_map_plan.apply", permission=MANAGE, target=("channel_map_plan", plan.id), before=before, after=after
        )
    return after, told, events


def rollback_plan(actor: Actor, scope: SiteScope, plan_id: str) -> tuple[dict[str, Any], list[str], list[FleetEvent]]:
    """Every node of the plan back to its before template; the plan, the nodes to tell, the events.

    A node whose assignment changed since the plan gave it (another change) is left as it is and says so.
    """
    plan = get_plan(scope, plan_id)
    if plan.state not in ROLLBACK_FROM:
        raise Conflict(f"The plan is {plan.state}: only an applying or applied plan can be rolled back.")
    before = _detail(plan)
    told: list[str] = []
    events: list[FleetEvent] = []
    now = utcnow()
    with database_proxy.atomic():
        plan = _set_state(plan, "rolling_back", rollback_at=now, finished_at=None)
        for row in _rows(plan.id):
            if row.rolled_back_at is not None:
                continue  # given back already (it refused or did not confirm)
            fields: dict[str, Any] = {"state": "rolled_back", "rolled_back_at": now}
            if row.sent_at is None or row.before_template_id == row.after_template_id:
                fields["rollback_confirmed_at"] = now  # nothing was changed on this node
            elif _current_template_id(row.node_id) != row.after_template_id:
                fields |= {"rollback_confirmed_at": now, "error": "its assignment changed since the plan; left as it is"}
            else:
                try:
                    _, caused = _give(actor, scope, row.node_id, row.before_template_id)
                except ApiError as err:
                    fields |= {"rollback_confirmed_at": now, "error": f"not rolled back: {err.message}"}
                else:
                    told.append(row.node_id)
                    events += caused
            _update_row(row, **fields)
        plan = _finish_if_done(plan, now)
        after = _detail(plan)
        record(
            actor,
            "channel_map_plan.rollback",
            permission=MANAGE,
            target=("channel_map_plan", plan.id),
            before=before,
            after=after,
        )
    return after, told, events


def _update_row(row: ChannelMapPlanNode, **fields: Any) -> None:
    ChannelMapPlanNode.update(**fields).where(
        ChannelMapPlanNode.plan_id == row.plan_id, ChannelMapPlanNode.node_id == row.node_id
    ).execute()


def _audit_node(actor: Actor, plan: ChannelMapPlan, node_id: str, outcome: str, error: str | None = None) -> None:
    """One node's outcome in a plan, on the node (so the node's site sees it)."""
    record(
        actor,
        f"channel_map_plan.node_{outcome}",
        permission=MANAGE if actor.type != "node" else None,
        target=("node", node_id),
        after={"plan_id": plan.id, "template_id": plan.template_id, "outcome": outcome, "error": error},
        outcome="success" if outcome in ("confirmed", "rollback_confirmed") else "failure",
        reason=error,
    )


def _finish_if_done(plan: ChannelMapPlan, now: datetime) -> ChannelMapPlan:
    """An applying plan whose nodes all answered (the refusing and silent ones given their before template back) is
    applied or partially applied; a rollback ends when every node confirmed its before template or ran out of time."""
    rows = _rows(plan.id)
    if plan.state == "applying" and not any(r.state in ("pending", "sent") or _to_roll_back(r) for r in rows):
        done = "applied" if all(r.state == "confirmed" for r in rows) else "partially_applied"
        return _set_state(plan, done, finished_at=now)
    if plan.state == "rolling_back":
        waiting = [r for r in rows if r.rolled_back_at is not None and r.rollback_confirmed_at is None]
        if all(_past(r.rolled_back_at, plan.timeout_s, now) for r in waiting):
            for row in waiting:
                _update_row(row, error=row.error or f"did not confirm its before template within {plan.timeout_s:g} s")
            return _set_state(plan, "rolled_back", finished_at=now)
    return plan


def _to_roll_back(row: ChannelMapPlanNode) -> bool:
    """A node that refused or did not confirm the plan's template, not given its before template yet (the sweep does)."""
    return row.state in ("failed", "timed_out") and row.sent_at is not None and row.rolled_back_at is None


def _past(since: datetime | None, timeout_s: float, now: datetime) -> bool:
    """Whether `timeout_s` has passed since `since` (never, when there is no `since`)."""
    return since is not None and since + timedelta(seconds=timeout_s) <= now


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


def confirm_applied(node: Node, message: ConfigApplied, at: datetime, events: list[FleetEvent]) -> None:
    """A node says it applied (or refused) a channel map: record it on the plan that waits for it, if any.

    Called by the hub's ingest of the node's `applied` topic for `what == "channel_map"`, inside its
    transaction. A confirmation counts when it names the template the plan gave the node (or, after a
    rollback, the one it gave back); a refusal fails the node, and the sweep gives it its before template.
    """
    del events  # plans publish no events of their own: the console reads a plan's state
    if message.what != "channel_map":
        return
    at = _naive_utc(at)
    rows = (
        ChannelMapPlanNode.select()
        .join(ChannelMapPlan, on=(ChannelMapPlan.id == ChannelMapPlanNode.plan_id))
        .where(
            ChannelMapPlanNode.node_id == node.id,
            ((ChannelMapPlanNode.state == "sent") & (ChannelMapPlan.state == "applying"))
            | (ChannelMapPlanNode.rolled_back_at.is_null(False) & ChannelMapPlanNode.rollback_confirmed_at.is_null()),
        )
    )
    actor = Actor("node", node.id, node.name)
    for row in list(rows):
        plan: ChannelMapPlan = ChannelMapPlan.get_by_id(row.plan_id)
        if row.state == "sent" and plan.state == "applying" and row.rolled_back_at is None:
            if message.id != row.after_template_id:
                continue  # an earlier map, reported before the plan's reached the node
            if message.ok:
                _update_row(row, state="confirmed", confirmed_at=at)
                _audit_node(actor, plan, node.id, "confirmed")
            else:
                error = f"refused the map: {message.error or 'no reason given'}"
                _update_row(row, state="failed", error=error)
                _audit_node(actor, plan, node.id, "failed", error)
        elif row.rolled_back_at is not None and message.id == row.before_template_id and message.ok:
            _update_row(row, rollback_confirmed_at=at)
            _audit_node(actor, plan, node.id, "rollback_confirmed")
        else:
            continue
        _finish_if_done(ChannelMapPlan.get_by_id(plan.id), utcnow())


def sweep(now: datetime | None = None) -> tuple[list[str], list[FleetEvent]]:
    """Time out the nodes that did not confirm, give the timed-out and refusing ones their before template, finish plans.

    Returns the nodes to tell on `cmd/config` and the events; run by the hub's periodic ingest sweep.
    """
    now = now or utcnow()
    told: list[str] = []
    events: list[FleetEvent] = []
    plans = list(ChannelMapPlan.select().where(ChannelMapPlan.state.in_(IN_FLIGHT)))
    for plan in plans:
        with database_proxy.atomic():
            for row in _rows(plan.id):
                if plan.state == "applying" and row.state == "sent" and _past(row.sent_at, plan.timeout_s, now):
                    row.state, row.error = "timed_out", f"did not confirm within {plan.timeout_s:g} s"
                    _update_row(row, state=row.state, error=row.error)
                    _audit_node(SYSTEM, plan, row.node_id, "timed_out", row.error)
                if _to_roll_back(row):
                    told_one, caused = _roll_back_node(plan, row, now)
                    told += told_one
                    events += caused
            _finish_if_done(ChannelMapPlan.get_by_id(plan.id), now)
    return told, events


def _roll_back_node(plan: ChannelMapPlan, row: ChannelMapPlanNode, now: datetime) -> tuple[list[str], list[FleetEvent]]:
    """Give one node of an applying plan its before template (it refused or did not confirm)."""
    if _current_template_id(row.node_id) != row.after_template_id:
        _update_row(row, rolled_back_at=now, rollback_confirmed_at=now)  # changed since by someone else: left as it is
        return [], []
    try:
        _, events = _give(SYSTEM, ALL_SITES, row.node_id, row.before_template_id)
    except ApiError as err:
        _update_row(row, rolled_back_at=now, rollback_confirmed_at=now, error=f"{row.error}; not rolled back: {err.message}")
        return [], []
    _update_row(row, rolled_back_at=now)
    _audit_node(SYSTEM, plan, row.node_id, "rolled_back", row.error)
    return [row.node_id], events

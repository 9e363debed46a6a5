"""Watchdog policies (settings): the detectors and remediation ladders a node runs, assigned where they apply.

A policy holds the protocol's `Detectors`, its assignments (`{site}`, `{node_id}` or
`{node_id, channel}`) and each calibrated node's baseline. The built-in `default` is made at
first use with the protocol's defaults and reaches every node no other policy does; it may be
changed (not renamed, not deleted). Every change returns the nodes whose resolved policy moved,
for the caller to send `cmd/config` to.

Site scope: reads are open to `settings:read` (a site-limited reader sees only its own sites'
assignments, baselines and nodes); a site-limited `settings:manage` holder creates, changes and
deletes only policies whose every assignment lies inside its sites (403 otherwise), and never
the hub-wide default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import peewee
from hark_fleet.hub.auth.principal import SiteScope
from hark_fleet.hub.clock import iso, utcnow
from hark_fleet.hub.db.models import Node, Site, WatchdogApplied, WatchdogPolicy, database_proxy
from hark_fleet.hub.db.optional_writes import write_if_room
from hark_fleet.hub.errors import Conflict, Forbidden, InvalidRequest, NotFound
from hark_fleet.hub.ids import new_id
from hark_fleet.hub.services import query
from hark_fleet.hub.services.audit import Actor, record
from hark_fleet.hub.services.listing import Filter, ListSpec
from hark_fleet.hub.services.text_checks import text_problem
from hark_fleet.hub.services.versioning import update_if_unchanged
from hark_fleet.hub.services.watchdog_resolve import DEFAULT_ID, PolicyIndex, changed_nodes, fleet_resolution
from hark_fleet.protocol.watchdog import Detectors

MANAGE = "settings:manage"
MAX_DESCRIPTION = 500
MAX_ASSIGNMENTS = 500
_MSGSPEC_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def node_sites(node_ids: Sequence[str] | None = None) -> dict[str, str | None]:
    """Node id -> site, of the given nodes (or every node)."""
    query = Node.select(Node.id, Node.site)
    if node_ids is not None:
        if not node_ids:
            return {}
        query = query.where(Node.id.in_(list(node_ids)))
    rows: Any = query.tuples()
    return dict(rows)


def policy_to_api(policy: WatchdogPolicy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "builtin": bool(policy.builtin),
        "detectors": policy.detectors or {},
        "assignments": list(policy.assignments or []),
        "baselines": dict(policy.baselines or {}),
        "created_at": iso(policy.created_at),
        "updated_at": iso(policy.updated_at),
        "version": policy.version,
    }


WATCHDOG_POLICY_LIST = ListSpec(
    model=WatchdogPolicy,
    serialize=policy_to_api,
    filters=(
        Filter("name", WatchdogPolicy.name, facet=False),
        Filter("builtin", WatchdogPolicy.builtin, query.boolean),
    ),
    search=(WatchdogPolicy.name, WatchdogPolicy.description),
    time_field=WatchdogPolicy.updated_at,
    export_columns=(
        "id",
        "name",
        "description",
        "builtin",
        "detectors",
        "assignments",
        "created_at",
        "updated_at",
        "version",
    ),
)


def default_detectors() -> dict[str, Any]:
    detectors: dict[str, Any] = msgspec.to_builtins(Detectors())
    return detectors


def ensure_default() -> None:
    """Make the built-in `default` policy if it is not there yet (safe when two callers race; skipped on a full disk)."""
    if WatchdogPolicy.get_or_none(WatchdogPolicy.id == DEFAULT_ID) is not None:
        return
    now = utcnow()
    row = {
        "id": DEFAULT_ID,
        "name": DEFAULT_ID,
        "description": "Built in: every node no other policy reaches. Unchanged, each node runs its own built-in thresholds.",
        "builtin": True,
        "detectors": default_detectors(),
        "assignments": [],
        "baselines": {},
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    write_if_room(WatchdogPolicy.insert(row).on_conflict_ignore())


def get_policy(policy_id: str) -> WatchdogPolicy:
    if policy_id == DEFAULT_ID:
        ensure_default()
    policy = WatchdogPolicy.get_or_none(WatchdogPolicy.id == policy_id)
    if policy is None:
        raise NotFound(f"No watchdog policy {policy_id}.")
    return policy


# -- checks --------------------------------------------------------------------------------------


def check_detectors(raw: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The detectors in stored form (every field, defaults filled in), and the problem if any (field path -> problem)."""
    try:
        detectors = msgspec.convert(raw, Detectors)
    except msgspec.ValidationError as err:
        message = str(err)
        match = _MSGSPEC_PATH.search(message)
        path = match.group("path") if match else ""
        problem = message[: match.start()] if match else message
        name = re.search(r"field `(?P<name>[^`]+)`", problem)
        if name and problem.startswith(("Object contains unknown field", "Object missing required field")):
            path = f"{path}.{name.group('name')}" if path else name.group("name")
            problem = "is not a known field" if "unknown" in problem else "is required"
        return {}, {f"detectors.{path}" if path else "detectors": problem[:1].lower() + problem[1:]}
    disk = detectors.disk_hours_left
    if disk.critical_hours > disk.warning_hours:
        return {}, {"detectors.disk_hours_left.critical_hours": "must not be more than warning_hours"}
    clean: dict[str, Any] = msgspec.to_builtins(detectors)
    return clean, {}


def merge_detectors(current: Mapping[str, Any], changes: Mapping[str, Any]) -> Any:
    """A PATCH's detectors over the current ones, detector by detector (a detector's `remediation` is replaced whole)."""
    if not isinstance(changes, Mapping):
        return changes  # converted and refused by check_detectors
    merged = dict(current)
    for name, value in changes.items():
        old = current.get(name)
        merged[name] = {**old, **value} if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return merged


def check_assignments(raw: Sequence[Mapping[str, Any]], scope: SiteScope) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Assignments in stored form, checked against the sites and nodes there are (and the caller may reach)."""
    problems: dict[str, str] = {}
    if len(raw) > MAX_ASSIGNMENTS:
        return [], {"assignments": f"at most {MAX_ASSIGNMENTS}"}
    node_ids = sorted({str(a["node_id"]) for a in raw if a.get("node_id") is not None})
    nodes = node_sites(node_ids)
    site_ids = sorted({str(a["site"]) for a in raw if a.get("site") is not None})
    found: Any = Site.select(Site.id).where(Site.id.in_(site_ids)).tuples() if site_ids else []
    sites = {row[0] for row in found}
    clean: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    for i, assignment in enumerate(raw):
        at = f"assignments[{i}]"
        site, node_id, channel = assignment.get("site"), assignment.get("node_id"), assignment.get("channel")
        if (site is None) == (node_id is None):
            problems[at] = "give either `site`, or `node_id` (with `channel` for one of its channels)"
            continue
        if site is not None:
            if channel is not None:
                problems[f"{at}.channel"] = "a channel is assigned with its `node_id`, not a site"
            elif site not in sites:
                problems[f"{at}.site"] = "no site has this id"
            elif not scope.allows(site):
                problems[f"{at}.site"] = "not one of your sites"
            key: tuple[str, ...] = ("site", site)
            item = {"site": site}
        else:
            if node_id not in nodes or not scope.allows(nodes[node_id]):
                problems[f"{at}.node_id"] = "no node has this id"
            if channel is not None and (why := text_problem(channel, 64)) is not None:
                problems[f"{at}.channel"] = why
            key = ("node", str(node_id)) if channel is None else ("channel", str(node_id), str(channel))
            item = {"node_id": node_id} if channel is None else {"node_id": node_id, "channel": channel}
        if key in seen:
            problems[at] = "listed more than once"
        seen.add(key)
        clean.append(item)
    return clean, problems


def _target(assignment: Mapping[str, Any]) -> tuple[str, ...]:
    if assignment.get("site") is not None:
        return ("site", assignment["site"])
    if assignment.get("channel") is not None:
        return ("channel", assignment["node_id"], assignment["channel"])
    return ("node", assignment["node_id"])


def _describe(target: tuple[str, ...]) -> str:
    if target[0] == "site":
        return f"site {target[1]}"
    if target[0] == "node":
        return f"node {target[1]}"
    return f"channel {target[2]} of node {target[1]}"


def _taken_targets(assignments: Sequence[Mapping[str, Any]], except_id: str | None) -> None:
    """409 when another policy already holds one of these targets (each site, node or channel has one policy)."""
    wanted = {_target(a) for a in assignments}
    if not wanted:
        return
    for other in WatchdogPolicy.select(WatchdogPolicy.id, WatchdogPolicy.name, WatchdogPolicy.assignments):
        if other.id == except_id:
            continue
        clash = wanted & {_target(a) for a in other.assignments or []}
        if clash:
            first = sorted(clash)[0]
            raise Conflict(
                f"The watchdog policy {other.name} is already assigned to {_describe(first)}; unassign it there first.",
                policy_id=other.id,
            )


def _policy_sites(assignments: Sequence[Mapping[str, Any]]) -> tuple[set[str | None], int]:
    """The sites a policy's assignments reach (a node's own site), and how many name nodes that are gone."""
    sites: set[str | None] = {a["site"] for a in assignments if a.get("site") is not None}
    node_ids = sorted({a["node_id"] for a in assignments if a.get("node_id") is not None})
    found = node_sites(node_ids)
    sites.update(found.values())
    return sites, len(set(node_ids) - set(found))


def _outside(policy: WatchdogPolicy, scope: SiteScope) -> str | None:
    """Why a site-limited caller may not change this policy, or None."""
    if scope.sites is None:
        return None
    if policy.builtin:
        return "the built-in default applies to every site"
    sites, _ = _policy_sites(policy.assignments or [])
    if not policy.assignments:
        return "it is not assigned inside your sites"
    beyond = sorted(str(s) for s in sites if not scope.allows(s))
    if beyond:
        return f"it is assigned outside your sites ({', '.join(beyond[:5])})"
    return None


def _require_in_scope(policy: WatchdogPolicy, scope: SiteScope, verb: str) -> None:
    why = _outside(policy, scope)
    if why is not None:
        raise Forbidden(f"Cannot {verb} this watchdog policy: {why}.", required=MANAGE)


# -- reads ---------------------------------------------------------------------------------------


def scoped_view(item: dict[str, Any], scope: SiteScope, sites: Mapping[str, str | None]) -> dict[str, Any]:
    """A policy as a site-limited reader sees it: only its own sites' assignments and baselines."""
    if scope.sites is None:
        return item

    def visible(assignment: Mapping[str, Any]) -> bool:
        if assignment.get("site") is not None:
            return scope.allows(assignment["site"])
        return assignment.get("node_id") in sites and scope.allows(sites[assignment["node_id"]])

    return {
        **item,
        "assignments": [a for a in item["assignments"] if visible(a)],
        "baselines": {k: v for k, v in item["baselines"].items() if k in sites and scope.allows(sites[k])},
    }


def scoped_items(items: list[dict[str, Any]], scope: SiteScope) -> list[dict[str, Any]]:
    if scope.sites is None:
        return items
    sites = node_sites()
    return [scoped_view(item, scope, sites) for item in items]


def _applied(node: Node, rows: Mapping[str, WatchdogApplied]) -> dict[str, Any] | None:
    """What the node says it runs: its newest heartbeat's `applied.watchdog`, with the `applied` report's outcome."""
    row = rows.get(node.id)
    reported = None
    if row is not None:
        reported = {"policy_id": row.policy_id, "version": row.version, "ok": bool(row.ok), "error": row.error, "at": iso(row.at)}
    heard = ((node.metrics or {}).get("applied") or {}).get("watchdog")
    if not isinstance(heard, Mapping):
        return reported
    same = reported is not None and reported["policy_id"] == heard.get("id") and reported["version"] == heard.get("version")
    if same:
        return reported
    return {
        "policy_id": heard.get("id"),
        "version": heard.get("version"),
        "ok": True,
        "error": None,
        "at": (node.metrics or {}).get("ts"),
    }


def policy_nodes(policy: WatchdogPolicy, scope: SiteScope) -> tuple[list[dict[str, Any]], dict[tuple[str, ...], int]]:
    """The caller's nodes that run the policy (whole or on some channels), what each runs now, and nodes per assignment."""
    index = PolicyIndex.load()
    query = Node.select(Node.id, Node.name, Node.site, Node.status, Node.metrics).order_by(Node.id)
    if scope.sites is not None:
        query = query.where(Node.site.in_(sorted(scope.sites)))
    nodes = list(query)
    applied = {r.node_id: r for r in WatchdogApplied.select().where(WatchdogApplied.node_id.in_([n.id for n in nodes]))}
    listed: list[dict[str, Any]] = []
    reach: dict[tuple[str, ...], int] = {}
    for node in nodes:
        resolved = index.resolve(node.id, node.site)
        channels = sorted(c for c, pid in resolved.channels.items() if pid == policy.id)
        whole = resolved.node_policy == policy.id
        if not whole and not channels:
            continue
        if whole and resolved.via == "site":
            reach[("site", node.site or "")] = reach.get(("site", node.site or ""), 0) + 1
        elif whole and resolved.via == "node":
            reach[("node", node.id)] = 1
        for channel in channels:
            reach[("channel", node.id, channel)] = 1
        expected = index.config(policy.id, node.id)
        now = _applied(node, applied)
        listed.append(
            {
                "node_id": node.id,
                "name": node.name,
                "site": node.site,
                "status": node.status,
                "via": resolved.via if whole else "channel",
                "channels": channels if not whole else [],
                "expected": {"policy_id": expected.policy_id, "version": expected.version},
                "applied": now,
                "current": now is not None
                and now["ok"]
                and now["policy_id"] == expected.policy_id
                and now["version"] == expected.version,
                "calibrated": node.id in (policy.baselines or {}),
            }
        )
    return listed, reach


def _actions(policy: WatchdogPolicy, scope: SiteScope) -> dict[str, dict[str, Any]]:
    beyond = _outside(policy, scope)
    builtin = "the built-in policy cannot be deleted" if policy.builtin else None
    return {
        "update": {"allowed": beyond is None, "reason": beyond},
        "delete": {"allowed": beyond is None and builtin is None, "reason": builtin or beyond},
        "calibrate": {"allowed": True, "reason": None},
    }


def policy_detail(scope: SiteScope, policy_id: str) -> dict[str, Any]:
    """A policy, its effective assignments (nodes each reaches), its nodes and what they run, and the actions allowed."""
    policy = get_policy(policy_id)
    nodes, reach = policy_nodes(policy, scope)
    item = scoped_view(policy_to_api(policy), scope, node_sites())
    item["assignments"] = [{**a, "nodes": reach.get(_target(a), 0)} for a in item["assignments"]]
    return {**item, "nodes": nodes, "actions": _actions(policy, scope)}


# -- writes --------------------------------------------------------------------------------------


def _snapshot(policy: WatchdogPolicy) -> dict[str, Any]:
    return policy_to_api(policy)


def create_policy(
    actor: Actor, scope: SiteScope, name: str, description: str, detectors: Any, assignments: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """A new policy (detectors left out take the protocol's defaults); the nodes whose resolved policy it changes."""
    clean_detectors, problems = check_detectors(detectors if detectors is not None else {})
    clean_assignments, assignment_problems = check_assignments(assignments, scope)
    problems |= assignment_problems
    if (why := text_problem(name, 100)) is not None:
        problems["name"] = why
    if len(description) > MAX_DESCRIPTION:
        problems["description"] = f"at most {MAX_DESCRIPTION} characters"
    if scope.sites is not None and not clean_assignments and "assignments" not in problems:
        problems["assignments"] = "a site-limited caller assigns the policy to its own sites, nodes or channels"
    if problems:
        raise InvalidRequest("The watchdog policy is invalid.", fields=problems)
    ensure_default()  # so `default` stays the built-in's name
    if WatchdogPolicy.select().where(WatchdogPolicy.name == name).exists():
        raise Conflict(f"A watchdog policy named {name} exists.")
    now = utcnow()
    try:
        with database_proxy.atomic():
            _taken_targets(clean_assignments, None)
            before = fleet_resolution()
            policy = WatchdogPolicy.create(
                id=new_id("wdp"),
                name=name,
                description=description,
                builtin=False,
                detectors=clean_detectors,
                assignments=clean_assignments,
                baselines={},
                created_at=now,
                updated_at=now,
                version=1,
            )
            after = _snapshot(policy)
            record(actor, "watchdog_policy.create", permission=MANAGE, target=("watchdog_policy", policy.id), after=after)
            changed = changed_nodes(before, fleet_resolution())
    except peewee.IntegrityError as err:
        raise Conflict(f"A watchdog policy named {name} exists.") from err
    return after, changed


def update_policy(actor: Actor, scope: SiteScope, policy_id: str, changes: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Change a policy (checked whole); `version`, if given, must be the current one (409). Returns the nodes to tell."""
    policy = get_policy(policy_id)
    _require_in_scope(policy, scope, "change")
    if "version" in changes and changes["version"] != policy.version:
        raise Conflict(f"The watchdog policy changed meanwhile (version {policy.version}); read it again.")
    before = _snapshot(policy)
    problems: dict[str, str] = {}
    fields: dict[str, Any] = {}
    if "detectors" in changes:
        fields["detectors"], problems = check_detectors(merge_detectors(before["detectors"], changes["detectors"]))
    if "assignments" in changes:
        if policy.builtin and changes["assignments"]:
            problems["assignments"] = "the built-in default applies wherever no other policy does; it takes no assignments"
        else:
            fields["assignments"], assignment_problems = check_assignments(changes["assignments"], scope)
            problems |= assignment_problems
            if scope.sites is not None and not fields["assignments"] and "assignments" not in problems:
                problems["assignments"] = "a site-limited caller keeps the policy assigned inside its sites"
    if "name" in changes:
        if policy.builtin and changes["name"] != policy.name:
            problems["name"] = "the built-in policy keeps its name"
        elif (why := text_problem(changes["name"], 100)) is not None:
            problems["name"] = why
        fields["name"] = changes["name"]
    if "description" in changes:
        if len(changes["description"]) > MAX_DESCRIPTION:
            problems["description"] = f"at most {MAX_DESCRIPTION} characters"
        fields["description"] = changes["description"]
    if problems:
        raise InvalidRequest("The watchdog policy is invalid.", fields=problems)
    if all(before[k] == v for k, v in fields.items()):
        return before, []  # nothing changes: no new version, nothing to tell
    if (
        "name" in fields
        and WatchdogPolicy.select().where(WatchdogPolicy.name == fields["name"], WatchdogPolicy.id != policy.id).exists()
    ):
        raise Conflict(f"A watchdog policy named {fields['name']} exists.")
    try:
        with database_proxy.atomic():
            if "assignments" in fields:
                _taken_targets(fields["assignments"], policy.id)
            resolved_before = fleet_resolution()
            update_if_unchanged(WatchdogPolicy, policy, fields, "watchdog policy")
            after = _snapshot(get_policy(policy.id))
            record(
                actor,
                "watchdog_policy.update",
                permission=MANAGE,
                target=("watchdog_policy", policy.id),
                before=before,
                after=after,
            )
            changed = changed_nodes(resolved_before, fleet_resolution())
    except peewee.IntegrityError as err:
        raise Conflict(f"A watchdog policy named {fields.get('name')} exists.") from err
    return after, changed


def delete_policy(actor: Actor, scope: SiteScope, policy_id: str) -> list[str]:
    """Delete a policy (its nodes fall back to the next most specific one); the built-in one answers 409."""
    policy = get_policy(policy_id)
    if policy.builtin:
        raise Conflict("The built-in watchdog policy cannot be deleted; change it instead.")
    _require_in_scope(policy, scope, "delete")
    before = _snapshot(policy)
    with database_proxy.atomic():
        resolved_before = fleet_resolution()
        WatchdogPolicy.delete().where(WatchdogPolicy.id == policy.id).execute()
        record(actor, "watchdog_policy.delete", permission=MANAGE, target=("watchdog_policy", policy.id), before=before)
        return changed_nodes(resolved_before, fleet_resolution())

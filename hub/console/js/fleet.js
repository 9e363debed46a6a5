// The fleet as a triage view: a status header and totals by status and by open health severity (from
// GET /api/v1/status), problems first, each node with the reasons it is degraded or offline, grouping by site, filters and sort kept in the
// address, selection with a bulk bar, live meter bars. Rows are built once per node and updated in
// place; a reload only touches what changed. Below 600 px wide the rows are laid out as cards.
import { api, can, follow, listAll } from "./api.js";
import { ago, field, fill, h, hashParams, select, setHashParams, utcText, when } from "./dom.js";
import { bulkBar } from "./fleet_bulk.js";
import { statusHeader } from "./fleet_status.js";
import { MeterView } from "./meters.js";
import { SEVERITY_RANK, STATUS_RANK, eventDetail, kindTitle, plural, worstFirst } from "./words.js";

const DISK_WARN_PCT = 90;
const TEMP_WARN_C = 75;
const STATUSES = ["offline", "degraded", "pending", "online"];
const SEVERITIES = ["critical", "warning", "info"];
const REASONS_SHOWN = 3; // open events listed in a row; the rest are counted
const RELOAD_MS = 10000;

/** Warnings from a node's last heartbeat, in words. */
export function nodeWarnings(node) {
  const warnings = [];
  const disk = node.metrics?.disk;
  if (disk && (disk.used_pct >= DISK_WARN_PCT || disk.free_bytes < 1e9)) warnings.push(`disk ${Math.round(disk.used_pct)} % full`);
  const temp = node.metrics?.temperature_c;
  if (temp !== null && temp !== undefined && temp >= TEMP_WARN_C) warnings.push(`${temp.toFixed(0)} °C`);
  if (node.time_quality === "unsynced") warnings.push("clock not synchronised");
  return warnings;
}

// A heartbeat warning already said by an open event of this kind is not said twice.
const WARNING_KIND = [[/^disk /, "disk.low"], [/°C$/, "temperature.high"], [/^clock /, "clock.unsynced"]];

export function clockText(node) {
  if (!node.time_quality) return "—";
  const offset = node.clock_offset_ms;
  return offset === null || offset === undefined ? node.time_quality : `${node.time_quality}, ${offset >= 0 ? "+" : ""}${offset.toFixed(0)} ms`;
}

/** One of the hub's own health events (no node) in words. */
export function hubEventText(event) {
  const d = event.details ?? {};
  if (event.kind === "hub.storage_full") {
    const free = typeof d.free_bytes === "number" ? `${Math.floor(d.free_bytes / 1048576)} MiB free` : "no room";
    const needed = typeof d.recover_above_bytes === "number" ? ` until ${Math.floor(d.recover_above_bytes / 1048576)} MiB are free` : "";
    return `The hub's data disk is full: ${d.path ?? "its data directory"} has ${free}. Changes and uploads are refused${needed}; `
      + "reads go on. Delete recordings or grow the disk: the hub recovers by itself.";
  }
  const detail = eventDetail(event);
  return `${kindTitle(event.kind)}${detail ? `: ${detail}` : ""}`;
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

/** How long since `iso`, in words ("12 min", "3 h", "2 days"). */
export function forHowLong(iso, now = Date.now()) {
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 90) return plural(s, "second");
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${Math.round(s / 3600)} h`;
  return plural(Math.round(s / 86400), "day");
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
const worstRank = (events) => (events.length ? SEVERITY_RANK[events[0].severity] ?? 9 : 9);

// Columns: key, heading, the class shared by th and td (so a narrow screen hides both), sortable.
const COLUMNS = [
  ["select", "", "fc-select", false],
  ["name", "Name", "fc-name", true],
  ["site", "Site", "fc-site", true],
  ["status", "Status", "fc-status", true],
  ["problems", "Problems", "fc-problems", true],
  ["seen", "Last seen", "fc-seen", true],
  ["clock", "Clock", "fc-clock", false],
  ["tags", "Tags", "fc-tags", false],
  ["levels", "Levels", "fc-levels", false],
];
const SORTABLE = new Set(COLUMNS.filter((c) => c[3]).map((c) => c[0]));
const DEFAULT_SORT = "status"; // problems first: offline, degraded, pending, online; worst event; name

// Comparators over rows ({node, events}); each ends on the name so the order is stable.
const byName = (a, b) => collator.compare(a.node.name, b.node.name) || a.node.id.localeCompare(b.node.id);
const byTriage = (a, b) => (STATUS_RANK[a.node.status] ?? 9) - (STATUS_RANK[b.node.status] ?? 9)
  || worstRank(a.events) - worstRank(b.events) || b.events.length - a.events.length || byName(a, b);
const COMPARE = {
  name: byName,
  site: (a, b) => collator.compare(a.node.site ?? "\uffff", b.node.site ?? "\uffff") || byTriage(a, b),
  status: byTriage,
  problems: (a, b) => worstRank(a.events) - worstRank(b.events) || b.events.length - a.events.length || byTriage(a, b),
  // Ascending: the longest silent first (never seen before all).
  seen: (a, b) => String(a.node.last_seen_at ?? "").localeCompare(String(b.node.last_seen_at ?? "")) || byTriage(a, b),
};

/** The view's state from the address ("#/fleet?status=offline&sort=-name&group=0"). */
function readState() {
  const p = hashParams();
  let sort = p.get("sort") ?? DEFAULT_SORT;
  const desc = sort.startsWith("-");
  sort = sort.replace(/^-/, "");
  const group = p.get("group");
  return {
    site: p.get("site") ?? "", status: p.get("status") ?? "", tag: p.get("tag") ?? "",
    severity: p.get("severity") ?? "", q: p.get("q") ?? "",
    sort: SORTABLE.has(sort) ? sort : DEFAULT_SORT, desc,
    group: group === "1" ? true : group === "0" ? false : null,
  };
}

function writeState(state) {
  setHashParams({
    site: state.site, status: state.status, tag: state.tag, severity: state.severity, q: state.q,
    sort: state.sort === DEFAULT_SORT && !state.desc ? "" : `${state.desc ? "-" : ""}${state.sort}`,
    group: state.group === null ? "" : state.group ? "1" : "0",
  });
}

function matches(row, { site, status, tag, severity, q }) {
  const { node } = row;
  if (site && (node.site ?? "") !== site) return false;
  if (status && node.status !== status) return false;
  if (tag && !node.tags.includes(tag)) return false;
  if (severity && !row.events.some((e) => e.severity === severity)) return false;
  if (q) {
    const haystack = [node.name, node.site, node.id, node.hardware_id, ...node.tags].join(" ").toLowerCase();
    if (!haystack.includes(q.toLowerCase())) return false;
  }
  return true;
}

const setText = (el, text) => { if (el.textContent !== text) el.textContent = text; };

/** "10 online, 1 degraded, 1 offline" (statuses in triage order, none left out that are there). */
function statusWords(counts) {
  return STATUSES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ") || "none";
}

export function renderFleet(view) {
  const state = readState();
  const rows = new Map(); // node id -> {tr, node, events, cells, signature}
  const groups = new Map(); // site key -> {tr, label, pick, list}
  const selected = new Set();
  let eventsByNode = new Map();
  let hubEvents = [];
  let loaded = false;
  let fleetStatus = null; // GET /api/v1/status: the totals and the status header
  const header = statusHeader();

  const streamState = h("span", { class: "badge small", role: "status" }, "connecting");
  // An overview takes the coalesced stream: ten events a second, each with the latest frame of every
  // node that sent one (the bars still fall smoothly and a clip always gets through), whatever the
  // fleet's size, for the page and for the hub (one encoding per tick for every page like this one).
  const meters = new MeterView(null, (s) => { streamState.textContent = s === "live" ? "live" : `meters ${s}`; }, { coalesce: "100ms" });
  const error = h("p", { class: "error", role: "alert" });
  const hubHealth = h("section", { class: "hub-health", "aria-label": "Hub health", hidden: true });
  const totals = h("div", { class: "fleet-totals", role: "group", "aria-label": "Totals" });
  const caption = h("caption", {}, "Loading nodes…");
  const tbody = h("tbody");
  // Selection only for someone who may act on several nodes at once.
  const canAct = can("node:manage") || can("settings:manage") || can("recording:create");
  const table = h("table", { class: `fleet-table${canAct ? "" : " no-select"}` }, caption);
  const siteSelect = select([["", "All sites"]], state.site, { name: "site" });
  const statusSelect = select([["", "Any status"], ...STATUSES.map((s) => [s, s])], state.status, { name: "status" });
  const tagSelect = select([["", "Any tag"]], state.tag, { name: "tag" });
  const severitySelect = select([["", "Any"], ...SEVERITIES.map((s) => [s, `open ${s}`])], state.severity, { name: "severity" });
  const text = h("input", { type: "search", name: "q", placeholder: "name, site, tag or id", value: state.q });
  const groupBox = h("input", { type: "checkbox", name: "group", id: "fleet-group" });
  const selectAll = h("input", { type: "checkbox", "aria-label": "Select all shown nodes" });
  const clearFilters = h("button", { type: "button", class: "link", onclick: () => {
    Object.assign(state, { site: "", status: "", tag: "", severity: "", q: "" });
    syncControls();
    changed();
  } }, "Clear filters");

  const bulk = bulkBar({
    selection: () => [...selected].map((id) => rows.get(id)?.node).filter(Boolean),
    hiddenCount: () => [...selected].filter((id) => rows.get(id)?.tr.hidden).length,
    clear: () => { selected.clear(); for (const row of rows.values()) row.check.checked = false; selectionChanged(); },
  });

  // Meters tick only on screen: a board out of view is hidden (MeterView skips hidden boards), its
  // height kept from the observer's own measure (no layout read), so 200 rows cost what a dozen do.
  const onScreen = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const board = entry.target.firstElementChild;
      if (!board) continue;
      if (entry.isIntersecting) {
        board.hidden = false;
        entry.target.style.minHeight = "";
      } else if (!board.hidden) {
        entry.target.style.minHeight = `${Math.round(entry.boundingClientRect.height)}px`;
        board.hidden = true;
      }
    }
  }, { rootMargin: "200px 0px" });

  // -- the header: sort buttons (aria-sort on the th), select-all ---------------------------
  const headers = new Map();
  const headRow = h("tr", {}, COLUMNS.map(([key, label, cls, sortable]) => {
    const th = h("th", { scope: "col", class: cls });
    if (key === "select") th.append(selectAll);
    else if (sortable) {
      th.append(h("button", { type: "button", class: "sort", onclick: () => {
        state.desc = state.sort === key ? !state.desc : false;
        state.sort = key;
        changed();
      } }, label, h("span", { class: "sort-mark", "aria-hidden": "true" })));
    } else th.append(label);
    headers.set(key, th);
    return th;
  }));

  const showSort = () => {
    for (const [key, th] of headers) {
      if (!SORTABLE.has(key)) continue;
      const on = state.sort === key;
      if (on) th.setAttribute("aria-sort", state.desc ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
      th.querySelector(".sort-mark").textContent = on ? (state.desc ? " ▼" : " ▲") : "";
    }
  };

  table.append(h("thead", {}, headRow), tbody);
  fill(view, h("section", { class: "fleet" },
    h("div", { class: "title-row" }, h("h2", {}, "Fleet"), streamState),
    hubHealth,
    header.el,
    totals,
    h("form", { class: "filters", role: "search", "aria-label": "Filter nodes", onsubmit: (e) => e.preventDefault() },
      field("Site", siteSelect), field("Status", statusSelect), field("Tag", tagSelect), can("health:read") ? field("Health", severitySelect) : null,
      field("Search", text),
      h("div", { class: "field checkbox" }, groupBox, h("label", { for: "fleet-group" }, "Group by site")),
      clearFilters),
    error,
    bulk.el,
    h("div", { class: "table-wrap" }, table)));

  // -- rows ------------------------------------------------------------------------------------
  const upsert = (node) => {
    let row = rows.get(node.id);
    if (!row) {
      const check = h("input", { type: "checkbox", "aria-label": `Select ${node.name}`, onchange: () => {
        if (check.checked) selected.add(node.id); else selected.delete(node.id);
        selectionChanged();
      } });
      const link = h("a", { href: `#/nodes/${encodeURIComponent(node.id)}` });
      const board = meters.board(node.id, { label: node.name }).el;
      board.hidden = true; // until it is on screen
      const slot = h("div", { class: "meter-slot" }, board);
      const cells = {
        select: h("td", { class: "fc-select" }, check),
        name: h("td", { class: "fc-name" }, link),
        site: h("td", { class: "fc-site" }),
        status: h("td", { class: "fc-status" }),
        problems: h("td", { class: "fc-problems" }),
        seen: h("td", { class: "fc-seen" }),
        clock: h("td", { class: "fc-clock" }),
        tags: h("td", { class: "fc-tags" }),
        levels: h("td", { class: "fc-levels" }, slot),
      };
      row = { tr: h("tr", { class: "node-row", dataset: { nodeId: node.id } }, Object.values(cells)), cells, check, link, slot, node, events: [], signature: "" };
      rows.set(node.id, row);
      onScreen.observe(slot);
    }
    row.node = node;
    row.events = eventsByNode.get(node.id) ?? [];
    const { cells } = row;
    setText(row.link, node.name);
    if (row.check.getAttribute("aria-label") !== `Select ${node.name}`) row.check.setAttribute("aria-label", `Select ${node.name}`);
    setText(cells.site, node.site ?? "—");
    setText(cells.tags, node.tags.join(", ") || "—");
    setText(cells.clock, clockText(node));
    row.tr.dataset.status = node.status;
    if (cells.status.textContent !== node.status) fill(cells.status, statusBadge(node.status));
    if (node.last_seen_at) {
      if (!cells.seen.firstElementChild) fill(cells.seen, h("time"));
      const time = cells.seen.firstElementChild;
      time.dateTime = node.last_seen_at;
      time.title = `${when(node.last_seen_at)} (${utcText(node.last_seen_at)})`;
      setText(time, ago(node.last_seen_at));
    } else setText(cells.seen, "never");
    showProblems(row);
    return row;
  };

  // The reasons a node needs attention: not connected (for how long), its open events worst first,
  // and what its last heartbeat says that no event says yet.
  const showProblems = (row) => {
    const { node, events } = row;
    const warnings = nodeWarnings(node).filter((w) => {
      const kind = WARNING_KIND.find(([pattern]) => pattern.test(w))?.[1];
      return !events.some((e) => e.kind === kind);
    });
    const connection = node.status === "offline"
      ? (node.last_seen_at ? `offline for ${forHowLong(node.last_seen_at)}` : "offline, never heard from")
      : node.status === "pending" ? "never connected yet" : null;
    const signature = JSON.stringify([connection, warnings, events.map((e) => [e.id, e.severity, e.count, e.state, e.last_seen])]);
    if (signature === row.signature) return;
    row.signature = signature;
    const shown = events.slice(0, REASONS_SHOWN);
    fill(row.cells.problems,
      connection && h("p", { class: "reason connection", title: node.last_seen_at ? `last seen ${when(node.last_seen_at)}` : null }, connection),
      shown.length ? h("ul", { class: "reasons", "aria-label": `Open health events of ${node.name}` }, shown.map((e) => {
        const detail = eventDetail(e);
        return h("li", { class: `reason sev-${e.severity}`, dataset: { kind: e.kind } },
          h("span", { class: "sev" }, e.severity), " ", h("strong", { class: "title" }, kindTitle(e.kind)),
          detail ? h("span", { class: "detail" }, ` — ${detail}`) : null,
          e.state === "acknowledged" ? h("span", { class: "hint" }, " (acknowledged)") : null);
      })) : null,
      events.length ? h("a", { class: "open-count", href: `#/health?node_id=${encodeURIComponent(node.id)}` },
        events.length > REASONS_SHOWN ? `${plural(events.length, "open event")} (${events.length - REASONS_SHOWN} more)` : plural(events.length, "open event")) : null,
      warnings.length ? h("p", { class: "warnings" }, warnings.map((w) => h("span", { class: "warn" }, w))) : null,
      !connection && !events.length && !warnings.length ? h("span", { class: "none" }, "—") : null);
  };

  // -- totals: each one a button that filters -------------------------------------------------
  const totalButtons = new Map();
  const totalButton = (kind, value, onclick) => {
    const key = `${kind}:${value}`;
    let button = totalButtons.get(key);
    if (!button) {
      button = h("button", { type: "button", class: `total total-${value}`, dataset: { total: key }, onclick },
        h("strong", { class: "n" }), " ", h("span", { class: "what" }, value), h("small", { class: "sub" }));
      totalButtons.set(key, button);
    }
    return button;
  };
  // The counts are the hub's (GET /api/v1/status, in the caller's sites), not counted here from the rows.
  const showTotals = () => {
    const known = (n) => (fleetStatus ? String(n ?? 0) : "–");
    const byStatus = fleetStatus?.nodes?.by_status ?? {};
    const onNodes = fleetStatus?.health_events?.on_nodes ?? {};
    const events = Object.fromEntries(SEVERITIES.map((s) => [s, onNodes[s]?.events ?? 0]));
    const nodesWith = Object.fromEntries(SEVERITIES.map((s) => [s, onNodes[s]?.nodes ?? 0]));
    const statusButtons = STATUSES.map((s) => {
      const b = totalButton("status", s, () => { state.status = state.status === s ? "" : s; syncControls(); changed(); });
      setText(b.querySelector(".n"), known(byStatus[s]));
      b.setAttribute("aria-pressed", String(state.status === s));
      b.title = `Show only ${s} nodes`;
      return b;
    });
    const severityButtons = can("health:read") ? SEVERITIES.map((s) => {
      const b = totalButton("severity", s, () => { state.severity = state.severity === s ? "" : s; syncControls(); changed(); });
      setText(b.querySelector(".n"), known(events[s]));
      setText(b.querySelector(".sub"), ` on ${plural(nodesWith[s], "node")}`);
      b.setAttribute("aria-pressed", String(state.severity === s));
      b.title = `Show only nodes with an open ${s} event`;
      return b;
    }) : [];
    if (!totals.childElementCount) {
      fill(totals,
        h("div", { class: "totals-group", role: "group", "aria-label": "Nodes by status" },
          h("span", { class: "totals-label" }, "Nodes"), statusButtons),
        severityButtons.length ? h("div", { class: "totals-group", role: "group", "aria-label": "Open health events by severity" },
          h("span", { class: "totals-label" }, "Open events"), severityButtons) : null);
    }
  };

  // -- filter, sort, group: one pass, rows moved only when the order changed ------------------
  const siteKey = (node) => node.site ?? "";
  const groupingOn = () => (state.group ?? new Set([...rows.values()].map((r) => siteKey(r.node))).size > 1);

  // A site's header row: its totals, and (for someone who may act) a button selecting its shown nodes.
  const siteGroup = (key) => {
    const label = h("span", { class: "group-label" });
    const group = { label, list: [] };
    const pick = canAct ? h("button", { type: "button", class: "link group-select", onclick: () => {
      const shown = group.list.filter((r) => !r.tr.hidden);
      const all = shown.every((r) => selected.has(r.node.id));
      for (const r of shown) {
        r.check.checked = !all;
        if (all) selected.delete(r.node.id); else selected.add(r.node.id);
      }
      selectionChanged();
    } }, `Select the shown nodes of ${key || "no site"}`) : null;
    group.pick = pick;
    group.tr = h("tr", { class: "fleet-group", dataset: { site: key } }, h("th", { scope: "rowgroup", colSpan: COLUMNS.length }, label, pick));
    groups.set(key, group);
    return group;
  };

  const arrange = () => {
    const compare = COMPARE[state.sort] ?? byTriage;
    const ordered = [...rows.values()].sort(state.desc ? (a, b) => compare(b, a) : compare);
    let shown = 0;
    for (const row of ordered) {
      row.tr.hidden = !matches(row, state);
      if (!row.tr.hidden) shown++;
    }
    const grouped = groupingOn();
    groupBox.checked = grouped;
    table.classList.toggle("grouped", grouped);
    let sequence = ordered.map((r) => r.tr);
    const used = new Set();
    if (grouped) {
      // Groups follow the sort: a site comes where its first node would.
      const members = new Map();
      for (const row of ordered) {
        const key = siteKey(row.node);
        if (!members.has(key)) members.set(key, []);
        members.get(key).push(row);
      }
      sequence = [];
      for (const [key, list] of members) {
        used.add(key);
        let group = groups.get(key);
        if (!group) group = siteGroup(key);
        group.list = list;
        const counts = {};
        for (const r of list) counts[r.node.status] = (counts[r.node.status] ?? 0) + 1;
        const visible = list.filter((r) => !r.tr.hidden).length;
        setText(group.label, `${key || "No site"} — ${plural(list.length, "node")}: ${statusWords(counts)}`
          + (visible < list.length ? ` (${visible} shown)` : ""));
        group.tr.hidden = !visible;
        sequence.push(group.tr, ...list.map((r) => r.tr));
      }
    }
    for (const [key, group] of groups) if (!used.has(key)) { group.tr.remove(); groups.delete(key); }
    // Move only what is out of place (a moved element loses focus).
    const current = tbody.children;
    if (current.length !== sequence.length || sequence.some((tr, i) => current[i] !== tr)) {
      sequence.forEach((tr, i) => { if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] ?? null); });
      while (tbody.children.length > sequence.length) tbody.lastElementChild.remove();
    }
    setText(caption, loaded && !rows.size ? "No nodes are enrolled yet (or none in your sites)." : `${shown} of ${plural(rows.size, "node")}`);
    clearFilters.hidden = !(state.site || state.status || state.tag || state.severity || state.q);
    showSort();
    showTotals();
    selectionChanged();
  };

  const selectionChanged = () => {
    const visible = [...rows.values()].filter((r) => !r.tr.hidden);
    const chosen = visible.filter((r) => selected.has(r.node.id)).length;
    selectAll.checked = visible.length > 0 && chosen === visible.length;
    selectAll.indeterminate = chosen > 0 && chosen < visible.length;
    for (const row of rows.values()) row.tr.classList.toggle("selected", selected.has(row.node.id));
    for (const [key, group] of groups) {
      if (!group.pick) continue;
      const shown = group.list.filter((r) => !r.tr.hidden);
      const all = shown.length > 0 && shown.every((r) => selected.has(r.node.id));
      setText(group.pick, `${all ? "Unselect" : "Select"} the shown nodes of ${key || "no site"}`);
    }
    bulk.update();
  };
  selectAll.addEventListener("change", () => {
    for (const row of rows.values()) {
      if (row.tr.hidden) continue;
      row.check.checked = selectAll.checked;
      if (selectAll.checked) selected.add(row.node.id); else selected.delete(row.node.id);
    }
    selectionChanged();
  });

  const changed = () => { writeState(state); arrange(); };
  const syncControls = () => {
    siteSelect.value = state.site; statusSelect.value = state.status; tagSelect.value = state.tag;
    severitySelect.value = state.severity; text.value = state.q;
  };
  const readControls = () => {
    state.site = siteSelect.value; state.status = statusSelect.value; state.tag = tagSelect.value;
    state.severity = severitySelect.value; state.q = text.value.trim();
    changed();
  };
  for (const control of [siteSelect, statusSelect, tagSelect, severitySelect]) control.addEventListener("change", readControls);
  let typing = null;
  text.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(readControls, 150); });
  groupBox.addEventListener("change", () => { state.group = groupBox.checked; changed(); });

  // -- loading -----------------------------------------------------------------------------------
  const loadEvents = async () => {
    if (!can("health:read")) return new Map();
    const events = await listAll("/api/v1/health-events", { state: ["open", "acknowledged"] });
    const byNode = new Map();
    hubEvents = [];
    for (const e of events) {
      if (e.node_id === null) { hubEvents.push(e); continue; }
      if (!byNode.has(e.node_id)) byNode.set(e.node_id, []);
      byNode.get(e.node_id).push(e);
    }
    for (const [id, list] of byNode) byNode.set(id, worstFirst(list));
    return byNode;
  };

  const loadStatus = () => api("/api/v1/status").then(({ data }) => {
    header.show(data);
    return data;
  }, (err) => { header.failed(err.message); return null; });

  let inFlight = null;
  let again = false;
  const load = async () => {
    if (inFlight) { again = true; return inFlight; }
    inFlight = (async () => {
      try {
        const [nodes, events, status] = await Promise.all([
          listAll("/api/v1/nodes"), loadEvents().catch(() => eventsByNode), loadStatus()]);
        eventsByNode = events;
        fleetStatus = status ?? fleetStatus;
        const seen = new Set(nodes.map((n) => n.id));
        for (const [id, row] of rows) {
          if (seen.has(id)) continue;
          row.tr.remove();
          onScreen.unobserve(row.slot);
          rows.delete(id);
          selected.delete(id);
        }
        for (const node of nodes) upsert(node);
        setOptions(siteSelect, "All sites", countBy(nodes, (n) => [n.site ?? ""]), state.site);
        setOptions(tagSelect, "Any tag", countBy(nodes, (n) => n.tags), state.tag);
        loaded = true;
        error.textContent = "";
        arrange();
        showHubHealth();
      } catch (err) {
        error.textContent = `Could not load the fleet: ${err.message}`;
      }
    })();
    try { await inFlight; } finally {
      inFlight = null;
      if (again) { again = false; soon(); }
    }
  };

  // The hub's own conditions: open health events with no node.
  const showHubHealth = () => {
    fill(hubHealth, hubEvents.length ? h("ul", { class: "health-list" },
      worstFirst(hubEvents).map((e) => h("li", { class: `sev-${e.severity}`, role: e.severity === "critical" ? "alert" : null },
        h("strong", {}, e.severity), " ", hubEventText(e)))) : null);
    hubHealth.hidden = !hubEvents.length;
  };

  syncControls();
  writeState(state);
  load();
  // Changes arrive on the events stream; many at once (a site losing power) make one reload.
  let pending = null;
  const soon = () => { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 500); };
  const refresh = setInterval(load, RELOAD_MS);
  const events = follow("/api/v1/events/stream", Object.fromEntries(
    ["node.online", "node.offline", "node.degraded", "node.pending", "node.updated", "node.enrolled", "node.deleted",
      "health.opened", "health.acknowledged", "health.suppressed", "health.resolved", "health.reopened"].map((type) => [type, soon])));
  return () => {
    clearInterval(refresh); clearTimeout(pending); clearTimeout(typing);
    events.close(); meters.close(); onScreen.disconnect();
  };
}

/** value -> count over the nodes, `values(node)` giving each node's values. */
function countBy(nodes, values) {
  const counts = new Map();
  for (const node of nodes) for (const v of values(node)) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => collator.compare(a[0], b[0]));
}

/** Options from [value, count] pairs, keeping `current` (from a bookmark) even when no node has it. */
function setOptions(selectEl, anyLabel, counts, current) {
  const named = counts.filter(([v]) => v !== "");
  const pairs = !current || named.some(([v]) => v === current) ? named : [...named, [current, 0]];
  const signature = JSON.stringify(pairs);
  if (selectEl.dataset.signature !== signature) {
    selectEl.dataset.signature = signature;
    fill(selectEl, h("option", { value: "" }, anyLabel), pairs.map(([v, n]) => h("option", { value: v }, `${v} (${n})`)));
  }
  if (selectEl.value !== current) selectEl.value = current;
}

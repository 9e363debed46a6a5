// Fleet overview: every node the user may see, filters, and live meter bars for each.
import { api, can, follow, listAll } from "./api.js";
import { ago, field, fill, h, select } from "./dom.js";
import { MeterView } from "./meters.js";

const DISK_WARN_PCT = 90;
const TEMP_WARN_C = 75;

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
  return `${event.kind} (${event.severity})`;
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

export function renderFleet(view) {
  const filters = { site: "", status: "", tag: "", q: "" };
  const rows = new Map(); // node id -> {tr, node, cells}
  const meters = new MeterView(null, (state) => { streamState.textContent = state === "live" ? "live" : `meters ${state}`; });
  const streamState = h("span", { class: "badge small", role: "status" }, "connecting");
  const error = h("p", { class: "error", role: "alert" });
  const hubHealth = h("section", { class: "hub-health", "aria-label": "Hub health", hidden: true });
  const caption = h("caption", {}, "Loading nodes…");
  const tbody = h("tbody");
  const siteSelect = select([["", "All sites"]], "", { name: "site" });
  const statusSelect = select([["", "Any status"], ...["online", "degraded", "offline", "pending"].map((s) => [s, s])], "", { name: "status" });
  const tagSelect = select([["", "Any tag"]], "", { name: "tag" });
  const text = h("input", { type: "search", name: "q", placeholder: "name, site, tag or id" });
  const apply = () => {
    filters.site = siteSelect.value;
    filters.status = statusSelect.value;
    filters.tag = tagSelect.value;
    filters.q = text.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows.values()) {
      row.tr.hidden = !matches(row.node, filters);
      if (!row.tr.hidden) shown++;
    }
    caption.textContent = `${shown} of ${rows.size} nodes`;
  };
  for (const control of [siteSelect, statusSelect, tagSelect]) control.addEventListener("change", apply);
  text.addEventListener("input", apply);

  fill(view, h("section", { class: "fleet" },
    h("div", { class: "title-row" }, h("h2", {}, "Fleet"), streamState),
    hubHealth,
    h("form", { class: "filters", role: "search", "aria-label": "Filter nodes", onsubmit: (e) => e.preventDefault() },
      field("Site", siteSelect), field("Status", statusSelect), field("Tag", tagSelect), field("Search", text)),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "fleet-table" }, caption,
      h("thead", {}, h("tr", {}, ["Name", "Site", "Tags", "Status", "Last seen", "Clock", "Warnings", "Levels"].map((t) => h("th", { scope: "col" }, t)))),
      tbody))));

  const upsert = (node) => {
    let row = rows.get(node.id);
    if (!row) {
      const cells = {
        name: h("td", {}, h("a", { href: `#/nodes/${encodeURIComponent(node.id)}` })),
        site: h("td"), tags: h("td", { class: "col-tags" }), status: h("td"), seen: h("td", { class: "col-seen" }),
        clock: h("td", { class: "col-clock" }), warnings: h("td", { class: "warnings" }), levels: h("td", { class: "levels" }),
      };
      const board = meters.board(node.id, { label: node.name });
      cells.levels.append(board.el);
      row = { tr: h("tr", { dataset: { nodeId: node.id } }, Object.values(cells)), cells, node };
      rows.set(node.id, row);
      tbody.append(row.tr);
    }
    row.node = node;
    const { cells } = row;
    cells.name.firstChild.textContent = node.name;
    cells.site.textContent = node.site ?? "—";
    cells.tags.textContent = node.tags.join(", ") || "—";
    fill(cells.status, statusBadge(node.status));
    cells.seen.textContent = ago(node.last_seen_at);
    cells.seen.title = node.last_seen_at ?? "";
    cells.clock.textContent = clockText(node);
    const warnings = nodeWarnings(node);
    fill(cells.warnings, warnings.length ? warnings.map((w) => h("span", { class: "warn" }, w)) : "—");
    return row;
  };

  const load = async () => {
    try {
      const [nodes, facets] = await Promise.all([
        listAll("/api/v1/nodes"),
        api("/api/v1/nodes/facets", { params: { fields: ["site", "tag"] } }),
      ]);
      const seen = new Set(nodes.map((n) => n.id));
      for (const [id, row] of rows) if (!seen.has(id)) { row.tr.remove(); rows.delete(id); }
      for (const node of nodes) upsert(node);
      setOptions(siteSelect, "All sites", facets.data.site);
      setOptions(tagSelect, "Any tag", facets.data.tag);
      error.textContent = "";
      apply();
      if (!nodes.length) caption.textContent = "No nodes are enrolled yet (or none in your sites).";
    } catch (err) {
      error.textContent = `Could not load the fleet: ${err.message}`;
    }
  };
  // The hub's own conditions: health events with no node (their kinds start with "hub.").
  const loadHubHealth = async () => {
    if (!can("health:read")) return;
    try {
      const { data } = await api("/api/v1/health-events", { params: { q: "hub.", state: ["open", "acknowledged"], limit: 20 } });
      const open = data.filter((e) => e.node_id === null);
      fill(hubHealth, open.length ? h("ul", { class: "health-list" },
        open.map((e) => h("li", { class: `sev-${e.severity}`, role: e.severity === "critical" ? "alert" : null },
          h("strong", {}, e.severity), " ", hubEventText(e)))) : null);
      hubHealth.hidden = !open.length;
    } catch { /* the fleet table says when the hub cannot be reached */ }
  };
  load();
  loadHubHealth();
  let pending = null;
  const soon = () => { clearTimeout(pending); pending = setTimeout(load, 300); };
  const refresh = setInterval(() => { load(); loadHubHealth(); }, 10000);
  // Status changes arrive at once on the events stream; the periodic reload fills in the rest.
  const hubChanged = (data) => { if (data?.node_id === null) loadHubHealth(); };
  const events = follow("/api/v1/events/stream", Object.fromEntries([
    ...["node.online", "node.offline", "node.degraded", "node.pending", "node.updated", "node.enrolled", "node.deleted"].map((type) => [type, soon]),
    ...["health.opened", "health.acknowledged", "health.suppressed", "health.resolved", "health.reopened"].map((type) => [type, hubChanged]),
  ]));
  return () => { clearInterval(refresh); clearTimeout(pending); events.close(); meters.close(); };
}

function setOptions(selectEl, anyLabel, facet = []) {
  const current = selectEl.value;
  fill(selectEl, h("option", { value: "" }, anyLabel),
    facet.filter((f) => f.value !== null).map((f) => h("option", { value: f.value }, `${f.value} (${f.count})`)));
  selectEl.value = facet.some((f) => f.value === current) ? current : "";
}

function matches(node, { site, status, tag, q }) {
  if (site && node.site !== site) return false;
  if (status && node.status !== status) return false;
  if (tag && !node.tags.includes(tag)) return false;
  if (q) {
    const haystack = [node.name, node.site, node.id, node.hardware_id, ...node.tags].join(" ").toLowerCase();
    if (!haystack.includes(q)) return false;
  }
  return true;
}

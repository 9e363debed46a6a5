// The week ahead of a site or a node: every enabled schedule's takes, day by day in the site's zone,
// each with its time, schedule (a link), state and nodes. The site, node and first day are in the address.
import { api, can, listAll } from "./api.js";
import { field, fill, h, hashParams, select, setHashParams } from "./dom.js";
import { plural } from "./words.js";
import { SCHEDULES, knownZone, stateChip, utcShort, utcToWall, wallToUtc } from "./schedule_rules.js";

const DAYS_SHOWN = 7;
const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

/** "2026-12-07" plus n days. */
const addDays = (day, n) => new Date(Date.parse(`${day}T00:00:00Z`) + n * 86400e3).toISOString().slice(0, 10);
const dayTitle = (day) => new Date(`${day}T12:00:00Z`).toLocaleDateString(undefined, { weekday: "long", day: "numeric", month: "short", timeZone: "UTC" });

export function renderScheduleWeek(view) {
  const initial = hashParams();
  let gone = false;
  let sites = [];
  let nodes = [];
  const site = select([["", "Every site"]], initial.get("site") ?? "", { name: "site" });
  const node = select([["", "Every node"]], initial.get("node_id") ?? "", { name: "node_id" });
  const first = h("input", { type: "date", name: "from", value: initial.get("from") ?? "" });
  const error = h("p", { class: "error", role: "alert" });
  const summary = h("p", { class: "schedule-week-summary", role: "status" }, "Loading…");
  const grid = h("div", { class: "schedule-week" });

  const zoneNow = () => {
    const n = nodes.find((x) => x.id === node.value);
    const siteId = site.value || n?.site;
    const zone = sites.find((s) => s.id === siteId)?.time_zone;
    return zone && knownZone(zone) ? zone : browserZone();
  };

  const load = async () => {
    const zone = zoneNow();
    const day = first.value || utcToWall(new Date().toISOString(), zone).slice(0, 10);
    if (!first.value) first.value = day;
    setHashParams({ site: site.value, node_id: node.value, from: first.value });
    const days = Array.from({ length: DAYS_SHOWN }, (_, i) => addDays(day, i));
    const from = wallToUtc(`${day}T00:00`, zone);
    const to = wallToUtc(`${addDays(day, DAYS_SHOWN)}T00:00`, zone);
    let takes;
    try {
      takes = (await api(`${SCHEDULES}/upcoming`, { params: { site: site.value, node_id: node.value, from, to } })).data ?? [];
    } catch (err) { if (!gone) error.textContent = `Could not load the takes: ${err.message}`; return; }
    if (gone) return;
    error.textContent = "";
    const names = new Map(nodes.map((n) => [n.id, n.name]));
    const byDay = new Map(days.map((d) => [d, []]));
    for (const t of takes) byDay.get(utcToWall(t.start_utc, zone).slice(0, 10))?.push(t);
    const where = node.value ? (names.get(node.value) ?? node.value) : site.value || "every site you see";
    summary.textContent = `${plural(takes.length, "take")} for ${where} from ${dayTitle(day)}; times in ${zone}.`;
    fill(grid, days.map((d) => {
      const items = byDay.get(d).sort((a, b) => a.start_utc.localeCompare(b.start_utc));
      const id = `week-day-${d}`;
      return h("section", { class: "schedule-day", "aria-labelledby": id, dataset: { day: d } },
        h("h3", { id }, dayTitle(d)),
        items.length ? h("ol", { class: "schedule-takes" }, items.map((t) => h("li", { class: "schedule-take", dataset: { state: t.state, scheduleId: t.schedule_id } },
          h("span", { class: "schedule-take-time" },
            h("time", { datetime: t.start_utc, title: utcShort(t.start_utc) }, utcToWall(t.start_utc, zone).slice(11, 16)), "–",
            h("time", { datetime: t.end_utc, title: utcShort(t.end_utc) }, utcToWall(t.end_utc, zone).slice(11, 16))),
          " ", h("a", { href: `#/schedules/${encodeURIComponent(t.schedule_id)}` }, t.schedule_name ?? t.schedule_id),
          " ", stateChip(t.state),
          h("div", { class: "hint" }, (t.node_ids ?? []).length > 3 ? plural(t.node_ids.length, "node") : (t.node_ids ?? []).map((i) => names.get(i) ?? i).join(", ") || "no node now"))))
          : h("p", { class: "hint" }, "Nothing scheduled."));
    }));
  };

  const shift = (n) => { first.value = addDays(first.value || utcToWall(new Date().toISOString(), zoneNow()).slice(0, 10), n); load(); };
  for (const el of [site, node, first]) el.addEventListener("change", () => load());
  site.addEventListener("change", () => { if (site.value) node.value = ""; });
  node.addEventListener("change", () => { if (node.value) site.value = ""; });

  fill(view, h("section", { class: "schedules-week" },
    h("div", { class: "title-row" }, h("h2", {}, "Upcoming takes"), h("a", { href: "#/schedules" }, "All schedules")),
    h("form", { class: "filters", role: "search", "aria-label": "Choose the week", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Site", site), field("Node", node), field("First day", first),
      h("button", { type: "button", onclick: () => shift(-DAYS_SHOWN) }, "Previous week"),
      h("button", { type: "button", onclick: () => shift(DAYS_SHOWN) }, "Next week"),
      h("button", { type: "submit" }, "Show")),
    error, summary, grid));
  (async () => {
    [sites, nodes] = await Promise.all([
      listAll("/api/v1/sites").catch(() => []),
      can("node:read") ? listAll("/api/v1/nodes").catch(() => []) : [],
    ]);
    if (gone) return;
    const keep = (el, options) => {
      const current = el.value || (el === site ? initial.get("site") : initial.get("node_id")) || "";
      fill(el, options.map(([v, label]) => h("option", { value: v }, label)));
      if (current && !options.some(([v]) => v === current)) el.append(h("option", { value: current }, current));
      el.value = current;
    };
    keep(site, [["", "Every site"], ...sites.map((s) => [s.id, s.name && s.name !== s.id ? `${s.name} (${s.id})` : s.id])]);
    keep(node, [["", "Every node"], ...nodes.sort((a, b) => a.name.localeCompare(b.name)).map((n) => [n.id, n.site ? `${n.name} (${n.site})` : n.name])]);
    load();
  })();
  return () => { gone = true; };
}

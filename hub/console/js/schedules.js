// Schedules: the list (filters with counts, export, each schedule's targets, "when" in words and its
// next take at the site); the form, one schedule's page and the week view are in schedule_*.js.
import { api, can, listAll, query } from "./api.js";
import { field, fill, h, hashParams, select, setHashParams } from "./dom.js";
import { plural } from "./words.js";
import { SCHEDULES, targetWords, whenWords, zoned } from "./schedule_rules.js";

export { renderScheduleEdit, renderScheduleNew } from "./schedule_form.js";
export { renderSchedule } from "./schedule_detail.js";
export { renderScheduleWeek } from "./schedule_week.js";

const PAGE = 100;
const FACETS = ["site", "time_zone", "profile_id", "on_conflict"];
const FACET_LABELS = { site: "Site", time_zone: "Time zone", profile_id: "Profile", on_conflict: "On a clash" };

export function renderSchedules(view) {
  const initial = hashParams();
  let rows = [];
  let cursor = null;
  let gone = false;
  let names = new Map();
  const q = h("input", { type: "search", name: "q", placeholder: "name or description", value: initial.get("q") ?? "" });
  const enabled = select([["", "Any"], ["true", "Enabled"], ["false", "Disabled"]], initial.get("enabled") ?? "", { name: "enabled" });
  const selects = Object.fromEntries(FACETS.map((name) => {
    const value = initial.get(name) ?? "";
    return [name, select([["", "Any"], ...(value ? [[value, value]] : [])], value, { name })];
  }));
  const error = h("p", { class: "error", role: "alert" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) }, "Load more");
  const csv = h("a", { class: "button", href: `${SCHEDULES}/export?format=csv`, download: "schedules.csv" }, "Export CSV");
  const ndjson = h("a", { class: "button", href: `${SCHEDULES}/export?format=ndjson`, download: "schedules.ndjson" }, "Export NDJSON");

  const params = () => {
    const p = { q: q.value.trim(), enabled: enabled.value };
    for (const name of FACETS) p[name] = selects[name].value;
    return p;
  };

  const row = (s) => h("tr", { dataset: { scheduleId: s.id } },
    h("td", {}, h("a", { href: `#/schedules/${encodeURIComponent(s.id)}` }, s.name), s.description ? h("div", { class: "hint schedule-description" }, s.description) : null),
    h("td", {}, h("span", { class: `state ${s.enabled ? "state-succeeded" : ""}` }, s.enabled ? "enabled" : "disabled")),
    h("td", { class: "col-targets" }, targetWords(s.target, names)),
    h("td", {}, whenWords(s)),
    h("td", { class: "col-zone" }, s.time_zone),
    h("td", { class: "col-next" }, s.next_occurrence ? zoned(s.next_occurrence.start_utc, s.time_zone) : h("span", { class: "hint" }, s.enabled ? "none ahead" : "—")),
    h("td", { class: "col-site" }, s.site ?? "several"));

  const load = async (append = false) => {
    const p = params();
    setHashParams(p);
    csv.href = `${SCHEDULES}/export${query({ ...p, format: "csv" })}`;
    ndjson.href = `${SCHEDULES}/export${query({ ...p, format: "ndjson" })}`;
    try {
      const body = await api(SCHEDULES, { params: { ...p, limit: PAGE, cursor: append ? cursor : null } });
      if (gone) return;
      rows = append ? rows.concat(body.data) : body.data;
      cursor = body.meta?.next_cursor ?? null;
      more.hidden = !cursor;
      caption.textContent = rows.length ? `${cursor ? `${rows.length}+ schedules` : plural(rows.length, "schedule")}` : "No schedule matches.";
      fill(tbody, rows.length ? rows.map(row) : h("tr", {}, h("td", { colSpan: 7 }, can("schedule:manage") ? "No schedules yet: make one with “New schedule”." : "No schedules yet.")));
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the schedules: ${err.message}`; return; }
    try {
      const facets = (await api(`${SCHEDULES}/facets`, { params: { ...p, fields: FACETS } })).data;
      for (const name of FACETS) {
        const el = selects[name];
        const current = el.value;
        fill(el, h("option", { value: "" }, "Any"), (facets[name] ?? []).filter((v) => v.value !== null && v.value !== "")
          .map((v) => h("option", { value: v.value }, `${v.value} (${v.count})`)));
        if (current && ![...el.options].some((o) => o.value === current)) el.append(h("option", { value: current }, current));
        el.value = current;
      }
    } catch { /* counts are a convenience */ }
  };
  for (const el of [enabled, ...Object.values(selects)]) el.addEventListener("change", () => load());

  fill(view, h("section", { class: "schedules" },
    h("div", { class: "title-row" }, h("h2", {}, "Schedules"),
      h("a", { class: "button", href: "#/schedules/week" }, "Week view"), csv, ndjson,
      can("schedule:manage") ? h("a", { class: "button primary", href: "#/schedules/new" }, "New schedule") : null),
    h("form", { class: "filters", role: "search", "aria-label": "Filter schedules", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Search", q), field("Enabled", enabled), FACETS.map((name) => field(FACET_LABELS[name], selects[name])), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "schedule-table" }, caption,
      h("thead", {}, h("tr", {}, [["Schedule"], ["State"], ["Records on", "col-targets"], ["When"], ["Time zone", "col-zone"], ["Next", "col-next"], ["Site", "col-site"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody)),
    more));
  (async () => {
    if (can("node:read")) {
      try { names = new Map((await listAll("/api/v1/nodes")).map((n) => [n.id, n.name])); } catch { /* names are a convenience */ }
    }
    if (!gone) load();
  })();
  return () => { gone = true; };
}

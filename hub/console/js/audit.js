// Audit viewer: filters (with counts), the events newest first, details, and export.
import { api, query } from "./api.js";
import { field, fill, h, select, show, when } from "./dom.js";

const FACETS = ["action", "outcome", "actor_type", "target_type", "permission"];

export function renderAudit(view) {
  let rows = [];
  let cursor = null;
  const q = h("input", { type: "search", name: "q", placeholder: "action, actor or target" });
  const selects = Object.fromEntries(FACETS.map((name) => [name, select([["", "Any"]], "", { name })]));
  const targetId = h("input", { name: "target_id", placeholder: "exact id" });
  const from = h("input", { type: "datetime-local", name: "from" });
  const to = h("input", { type: "datetime-local", name: "to" });
  const error = h("p", { class: "error", role: "alert" });
  const tbody = h("tbody");
  const caption = h("caption", {}, "Loading…");
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) }, "Load more");
  const csv = h("a", { class: "button", href: "#", download: "audit.csv" }, "Export CSV");
  const ndjson = h("a", { class: "button", href: "#", download: "audit.ndjson" }, "Export NDJSON");

  const params = () => {
    const p = { q: q.value.trim(), target_id: targetId.value.trim() };
    for (const name of FACETS) p[name] = selects[name].value;
    if (from.value) p.from = new Date(from.value).toISOString();
    if (to.value) p.to = new Date(to.value).toISOString();
    return p;
  };

  const load = async (append = false) => {
    const p = params();
    csv.href = `/api/v1/audit-events/export${query({ ...p, format: "csv" })}`;
    ndjson.href = `/api/v1/audit-events/export${query({ ...p, format: "ndjson" })}`;
    try {
      const body = await api("/api/v1/audit-events", { params: { ...p, limit: 100, cursor: append ? cursor : null } });
      rows = append ? rows.concat(body.data) : body.data;
      cursor = body.meta.next_cursor;
      more.hidden = !cursor;
      caption.textContent = rows.length ? `${rows.length}${cursor ? "+" : ""} events, newest first` : "No event matches.";
      fill(tbody, rows.map((e) => h("tr", { class: e.outcome === "failure" ? "failure" : "" },
        h("td", {}, when(e.at)), h("td", {}, `${e.actor?.name ?? e.actor?.id ?? "—"} (${e.actor?.type ?? "?"})`), h("td", {}, e.action),
        h("td", {}, e.target ? `${e.target.type} ${e.target.id ?? ""}` : "—"), h("td", {}, e.outcome, e.reason ? ` — ${e.reason}` : ""),
        h("td", { class: "col-ip" }, e.source_ip ?? "—"),
        h("td", {}, e.before || e.after ? h("details", {}, h("summary", {}, "changes"),
          h("dl", { class: "facts" }, h("dt", {}, "permission"), h("dd", {}, e.permission ?? "—"), h("dt", {}, "before"), h("dd", {}, h("code", { class: "wrap" }, show(e.before))),
            h("dt", {}, "after"), h("dd", {}, h("code", { class: "wrap" }, show(e.after))))) : "—"))));
      error.textContent = "";
      const facets = (await api("/api/v1/audit-events/facets", { params: { ...p, fields: FACETS } })).data;
      for (const name of FACETS) {
        const el = selects[name];
        const current = el.value;
        fill(el, h("option", { value: "" }, "Any"), (facets[name] ?? []).filter((v) => v.value !== null).map((v) => h("option", { value: v.value }, `${v.value} (${v.count})`)));
        el.value = current;
      }
    } catch (err) { error.textContent = `Could not load the audit log: ${err.message}`; }
  };
  for (const el of [...Object.values(selects), from, to]) el.addEventListener("change", () => load());

  fill(view, h("section", { class: "audit" },
    h("div", { class: "title-row" }, h("h2", {}, "Audit log"), csv, ndjson),
    h("form", { class: "filters", role: "search", "aria-label": "Filter audit events", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Search", q), ...FACETS.map((name) => field(name.replace("_", " "), selects[name])), field("Target id", targetId),
      field("From", from), field("To", to), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", {}, caption,
      h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Target", "Outcome", "Address", "Details"].map((t) => h("th", { scope: "col" }, t)))), tbody)),
    more));
  load();
}

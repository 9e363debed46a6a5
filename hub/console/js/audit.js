// Audit viewer: filters (with counts), the events newest first, details, and export.
import { api, query } from "./api.js";
import { field, fill, h, select, show, timeEl, when } from "./dom.js";
import { plural } from "./words.js";

const FACETS = ["action", "outcome", "actor_type", "target_type", "permission"];

const ACTOR_KINDS = { key: "API key", node: "Node", system: "The hub", anonymous: "Someone not signed in" };

/**
 * Who did it, in words. A technician's action at a node is the technician's ("Technician PIN user
 * (at Stage left)", their id on hover), not the node's, though the node reported it.
 */
export function actorCell(e) {
  const actor = e.actor ?? {};
  const node = e.after && typeof e.after === "object" && e.after.node && typeof e.after.node === "object" ? e.after.node : null;
  if (actor.type === "technician") {
    const at = node?.name ?? node?.id;
    let who = actor.name ?? actor.id ?? "unidentified";
    if (at && who.endsWith(` at ${at}`)) who = who.slice(0, -` at ${at}`.length);
    const text = actor.id ? `Technician ${who}` : who.charAt(0).toUpperCase() + who.slice(1);
    return h("span", { class: "actor actor-technician", title: actor.id ? `technician ${actor.id}` : "a technician who was not identified" },
      text, at ? ` (at ${at})` : "");
  }
  const name = actor.name ?? actor.id ?? "—";
  if (actor.type === "user" || !actor.type) return h("span", { class: "actor", title: actor.id ? `user ${actor.id}` : null }, name);
  if (actor.type === "system") return h("span", { class: "actor" }, actor.name && !["system", "hub"].includes(actor.name.toLowerCase()) ? `The hub (${actor.name})` : "The hub");
  return h("span", { class: "actor", title: actor.id ? `${actor.type} ${actor.id}` : null }, `${ACTOR_KINDS[actor.type] ?? actor.type} ${name}`);
}

/** A reason written by the hub, its ISO times shown like every other time (with their zone). */
const zonedText = (text) => String(text).replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)/g, (iso) => when(iso));

/** What it was done to: the node's name when the event carries it, the id otherwise. */
function targetCell(e) {
  if (!e.target) return "—";
  const node = e.target.type === "node" && e.after?.node?.id === e.target.id ? e.after.node : null;
  if (node?.name) return h("span", { title: `node ${node.id}` }, "node ", node.name);
  return [`${e.target.type} `, e.target.id ? h("code", { class: "id" }, e.target.id) : ""];
}

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
      caption.textContent = rows.length ? `${cursor ? `${rows.length}+ events` : plural(rows.length, "event")}, newest first` : "No event matches.";
      fill(tbody, rows.map((e) => h("tr", { class: e.outcome === "failure" ? "failure" : "" },
        h("td", {}, timeEl(e.at)), h("td", { class: "col-actor" }, actorCell(e)), h("td", {}, e.action),
        h("td", { class: "col-target" }, targetCell(e)), h("td", {}, e.outcome, e.reason ? ` — ${zonedText(e.reason)}` : ""),
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
      field("From", from), field("To", to), h("button", { type: "submit" }, "Filter"),
      h("small", { class: "hint full-row" }, `From and To are in your browser's zone (${Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"}).`)),
    error,
    h("div", { class: "table-wrap" }, h("table", {}, caption,
      h("thead", {}, h("tr", {}, [["When"], ["Who", "col-actor"], ["Action"], ["Target", "col-target"], ["Outcome"], ["Address", "col-ip"], ["Details"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody)),
    more));
  load();
}

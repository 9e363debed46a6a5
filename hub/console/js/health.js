// The fleet-wide health inbox: every open problem in words, filtered (the filters kept in the address so
// a view can be bookmarked), worked through one at a time or in bulk, and refreshed live from the
// events stream.
import { api, can, follow, listAll, query } from "./api.js";
import { field, fill, h, hashParams, notify, select, setHashParams, timeEl, uid, when } from "./dom.js";
import { eventDetail, kindTitle, plural } from "./words.js";

const PAGE = 50;
const BULK_MAX = 500; // ids per bulk-lifecycle request
// The state filter's choices; "" (the default) is what still needs someone: open or acknowledged.
const STATE_CHOICES = [
  ["", "Open or acknowledged", ["open", "acknowledged"]],
  ["open", "Open", ["open"]],
  ["acknowledged", "Acknowledged", ["acknowledged"]],
  ["suppressed", "Suppressed", ["suppressed"]],
  ["resolved", "Resolved", ["resolved"]],
  ["any", "Any state", []],
];
const SEVERITIES = ["critical", "warning", "info"];
// Filter name in the address -> the API's query parameter.
const FILTERS = { state: "state", site: "site", severity: "severity", kind: "kind", node: "node_id", q: "q" };
const LIVE_EVENTS = ["health.opened", "health.repeated", "health.acknowledged", "health.suppressed", "health.resolved", "health.reopened",
  "health.remediation"];
const ACTION_WORDS = { "restart-audio": "Restart audio", "restart-agent": "Restart the agent", reboot: "Reboot" };
const ENTRY_WORDS = { opened: "Opened", acknowledged: "Acknowledged", suppressed: "Suppressed", resolved: "Resolved", reopened: "Reopened", calibration: "Calibrated" };

/** One timeline entry in words: who did what, and for a remediation step its rung, action, outcome and why. */
function timelineEntry(entry) {
  const who = entry.actor?.type === "node" ? "by the node" : entry.actor?.type === "system" ? "by the hub" : entry.actor?.name ? `by ${entry.actor.name}` : "";
  if (entry.type === "remediation") {
    return h("li", { class: "tl-entry tl-remediation", dataset: { outcome: entry.outcome ?? "" } }, timeEl(entry.at), " ",
      h("span", { class: "tl-what" }, `Step ${(entry.step ?? 0) + 1}: ${ACTION_WORDS[entry.action] ?? entry.action}`), " ",
      h("span", { class: `state tl-outcome tl-outcome-${entry.outcome}` }, entry.outcome),
      entry.reason ? h("span", { class: "tl-reason" }, ` ${entry.reason}`) : null,
      entry.output ? h("pre", { class: "tl-output" }, entry.output) : null);
  }
  const until = entry.type === "suppressed" && entry.until ? [" until ", timeEl(entry.until)] : null;
  return h("li", { class: `tl-entry tl-${entry.type}` }, timeEl(entry.at), " ",
    h("span", { class: "tl-what" }, ENTRY_WORDS[entry.type] ?? entry.type), until, who ? ` ${who}` : "",
    entry.reason ? h("span", { class: "tl-reason" }, ` (${entry.reason})`) : null);
}

// The lifecycle actions, and the states the hub allows each from (hub/services/health.py).
const ACTIONS = {
  acknowledge: { label: "Acknowledge", done: "acknowledged", from: ["open"] },
  suppress: { label: "Suppress…", verb: "Suppress", done: "suppressed", from: ["open", "acknowledged"] },
  resolve: { label: "Resolve", done: "resolved", from: ["open", "acknowledged", "suppressed"] },
  reopen: { label: "Reopen", done: "reopened", from: ["resolved"] },
};
const allows = (event, action) => Boolean(event) && ACTIONS[action].from.includes(event.state);

/** A date as a datetime-local value in the browser's zone ("2026-12-06T14:05"). */
function localInputValue(date) {
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

/** Ask until when to suppress; resolves to an ISO UTC time, or null when cancelled. */
function askUntil(title) {
  return new Promise((resolve) => {
    const now = new Date();
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
    const headingId = uid("suppress-h");
    const input = h("input", { type: "datetime-local", name: "until", required: true,
      value: localInputValue(new Date(now.getTime() + 3600000)), min: localInputValue(now) });
    const problem = h("p", { class: "error", role: "alert" });
    const dialog = h("dialog", { class: "confirm health-suppress", "aria-labelledby": headingId });
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    // Our own check, in words, instead of the browser's bubble for a time before `min`.
    const form = h("form", { method: "dialog", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const until = new Date(input.value);
      if (!input.value || Number.isNaN(until.getTime())) { problem.textContent = "Choose a date and time."; return; }
      if (until.getTime() <= Date.now()) { problem.textContent = "Choose a time in the future."; return; }
      done(until.toISOString());
    } },
    h("h2", { id: headingId }, title),
    h("p", {}, "The event stays silenced until then; if the problem is still there afterwards it needs attention again."),
    field("Suppress until", input, `In your browser's time zone (${zone}).`),
    problem,
    h("div", { class: "buttons" },
      h("button", { type: "button", onclick: () => done(null) }, "Cancel"),
      h("button", { type: "submit", class: "primary" }, "Suppress")));
    fill(dialog, form);
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(null); });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

export function renderHealth(view) {
  const mayAct = can("health:acknowledge");
  const selected = new Set();
  let rows = [];
  let cursor = null;
  let nodeNames = new Map();
  const namesTried = new Set();
  let loading = 0; // the newest load; older answers are dropped
  let closed = false; // the user has gone to another page
  const opened = new Set(); // events whose timeline is shown (kept across live refreshes)

  // -- filters, read from and written to the address ---------------------------------------------
  const start = hashParams();
  const stateSel = select(STATE_CHOICES.map(([v, label]) => [v, label]), "", { name: "state" });
  const siteSel = select([["", "Any site"]], "", { name: "site" });
  const severitySel = select([["", "Any severity"], ...SEVERITIES.map((s) => [s, s])], "", { name: "severity" });
  const kindSel = select([["", "Any problem"]], "", { name: "kind" });
  const nodeSel = select([["", "Any node"]], "", { name: "node" });
  const text = h("input", { type: "search", name: "q", placeholder: "e.g. disk, clock, silence" });
  const controls = { state: stateSel, site: siteSel, severity: severitySel, kind: kindSel, node: nodeSel, q: text };
  for (const [name, control] of Object.entries(controls)) {
    let value = start.get(name) ?? "";
    if ((name === "state" || name === "severity") && ![...control.options].some((o) => o.value === value)) value = ""; // a mistyped address
    if (control.tagName === "SELECT" && value && ![...control.options].some((o) => o.value === value)) {
      control.append(h("option", { value }, name === "kind" ? kindTitle(value) : value));
    }
    control.value = value;
  }
  const filters = () => Object.fromEntries(Object.keys(controls).map((name) => [name, controls[name].value.trim()]));
  const filtersActive = () => Object.entries(filters()).some(([, v]) => v);

  const nodeLabel = (id) => (id === null || id === undefined ? "Hub" : nodeNames.get(id) ?? id);
  const what = (event) => `${kindTitle(event.kind)} on ${event.node_id === null ? "the hub" : nodeLabel(event.node_id)}`;

  // The API's filters; `without` leaves one out (a facet counts the values the other filters leave).
  // The text matches a problem's title or its kind: it becomes the kinds it matches, `kinds` being
  // every kind there is under the other filters.
  const apiParams = (kinds = [], without = null) => {
    const f = filters();
    const p = {};
    for (const [name, param] of Object.entries(FILTERS)) {
      if (name === without || name === "q" || name === "state") continue;
      if (f[name]) p[param] = f[name];
    }
    if (without !== "state") p.state = STATE_CHOICES.find(([v]) => v === f.state)?.[2] ?? [];
    if (f.q && without !== "q" && without !== "kind") {
      const needle = f.q.toLowerCase();
      let matched = kinds.filter((k) => k.toLowerCase().includes(needle) || kindTitle(k).toLowerCase().includes(needle));
      if (f.kind) matched = matched.filter((k) => k === f.kind);
      if (matched.length) p.kind = matched;
      else p.q = f.q; // no title matches: the hub's own search on the kind (which then finds none)
    }
    return p;
  };

  // -- the page ---------------------------------------------------------------------------------
  const live = h("span", { class: "badge small", role: "status" }, "connecting");
  const exportLink = h("a", { class: "button", href: "#", download: "health-events.csv" }, "Export CSV");
  const error = h("p", { class: "error", role: "alert" });
  const caption = h("caption", { tabindex: "-1" }, "Loading…");
  const tbody = h("tbody");
  // On a phone the events are a list of cards (a table squeezed into cards loses its header row).
  const narrow = matchMedia("(max-width: 640px)");
  const cardsCount = h("p", { class: "health-count", tabindex: "-1" }, "Loading…");
  const cards = h("ul", { class: "health-cards", "aria-label": "Health events" });
  const empty = h("div", { class: "health-empty", role: "status", hidden: true });
  const more = h("button", { type: "button", hidden: true, onclick: () => load({ append: true }) }, "Load more");
  const selectAll = h("input", { type: "checkbox", name: "select_all" });
  const selectedCount = h("span", { class: "hint" }, "None selected.");
  const summary = h("p", { class: "health-summary", role: "status" });
  const bulkButtons = Object.entries(ACTIONS).map(([action, spec]) => h("button", {
    type: "button", hidden: true, dataset: { action }, onclick: (event) => bulk(action, event.currentTarget),
  }, `${spec.verb ?? spec.label} selected${action === "suppress" ? "…" : ""}`));

  const filterForm = h("form", { class: "filters health-filters", role: "search", "aria-label": "Filter health events",
    onsubmit: (event) => { event.preventDefault(); changed(); } },
  field("State", stateSel), field("Severity", severitySel), field("Problem", kindSel), field("Node", nodeSel),
  field("Site", siteSel), field("Search problems", text), h("button", { type: "submit" }, "Filter"),
  h("button", { type: "button", class: "link", onclick: () => clearFilters() }, "Clear filters"));

  const columns = [["hi-select", "Select"], ["hi-sev", "Severity"], ["hi-problem", "Problem"], ["hi-node", "Node"],
    ["hi-site", "Site"], ["hi-first", "First seen"], ["hi-last", "Last seen"], ["hi-state", "State"]];
  if (mayAct) columns.push(["hi-actions", "Actions"]);
  else columns.shift();

  fill(view, h("section", { class: "health-inbox" },
    h("div", { class: "title-row" }, h("h2", {}, "Health"), live, exportLink),
    filterForm,
    error,
    mayAct ? h("div", { class: "bulk health-bulk", role: "group", "aria-label": "Selected health events" },
      h("label", { class: "check" }, selectAll, "Select all shown"), selectedCount, bulkButtons, summary) : null,
    h("div", { class: "health-list", hidden: narrow.matches }, h("table", { class: "health-table" }, caption,
      h("thead", {}, h("tr", {}, columns.map(([cls, label]) => h("th", { scope: "col", class: cls },
        cls === "hi-select" ? h("span", { class: "visually-hidden" }, label) : label)))),
      tbody)),
    h("div", { class: "health-card-list", hidden: !narrow.matches }, cardsCount, cards),
    empty,
    more));

  // -- rows -------------------------------------------------------------------------------------
  const stateNote = (e) => {
    if (e.state === "acknowledged") return ["acknowledged", e.acknowledged_by ? ` by ${e.acknowledged_by}` : "", e.acknowledged_at ? [" ", timeEl(e.acknowledged_at)] : ""];
    if (e.state === "suppressed") return ["suppressed until ", timeEl(e.suppressed_until)];
    if (e.state === "resolved") return ["resolved ", timeEl(e.resolved_at)];
    return null;
  };

  const actionButtons = (e) => Object.entries(ACTIONS).filter(([action]) => allows(e, action)).map(([action, spec]) => {
    const button = h("button", { type: "button", class: `small${action === "resolve" ? " primary" : ""}`,
      "aria-label": `${spec.verb ?? spec.label} ${what(e)}`, dataset: { action, focusKey: `${e.id}:${action}` } }, spec.label);
    button.addEventListener("click", () => act(e, action, button));
    return button;
  });

  // The parts of one event, laid out as a table row or as a card.
  const partsOf = (e) => {
    const note = stateNote(e);
    let box = null;
    if (mayAct) {
      box = h("input", { type: "checkbox", checked: selected.has(e.id), "aria-label": `Select ${what(e)}`,
        dataset: { focusKey: `${e.id}:select` } });
      box.addEventListener("change", () => { if (box.checked) selected.add(e.id); else selected.delete(e.id); updateBulk(); });
    }
    return {
      box,
      severity: h("span", { class: `sev sev-${e.severity}` }, e.severity),
      title: kindTitle(e.kind),
      detail: eventDetail(e),
      node: e.node_id === null
        ? h("span", { class: "hi-hub" }, "Hub")
        : can("node:read") ? h("a", { href: `#/nodes/${encodeURIComponent(e.node_id)}` }, nodeLabel(e.node_id)) : nodeLabel(e.node_id),
      site: e.site ?? "—",
      first: timeEl(e.first_seen),
      last: [timeEl(e.last_seen), h("span", { class: "hi-count" }, e.count === 1 ? "seen once" : `seen ${plural(e.count, "time")}`)],
      state: [h("span", { class: `state state-${e.state}` }, e.state), note ? h("span", { class: "hi-note" }, note) : null],
      actions: mayAct ? actionButtons(e) : null,
    };
  };
  const itemData = (e) => ({ eventId: e.id, state: e.state, kind: e.kind });

  // The event's timeline (GET /health-events/{id}): opened, remediation steps, acknowledged... in time order.
  const timelineFor = (e) => {
    const list = h("ol", { class: "tl-list", "aria-label": `Timeline of ${what(e)}` }, h("li", { class: "hint" }, "Loading…"));
    const fetchTimeline = async () => {
      try {
        const { data } = await api(`/api/v1/health-events/${encodeURIComponent(e.id)}`);
        fill(list, data.timeline.length ? data.timeline.map(timelineEntry) : h("li", { class: "hint" }, "Nothing yet."));
      } catch (err) { fill(list, h("li", { class: "error" }, `Could not load the timeline: ${err.message}`)); }
    };
    const box = h("details", { class: "hi-timeline", open: opened.has(e.id), dataset: { focusKey: `${e.id}:timeline` } },
      h("summary", {}, "Timeline"), list);
    box.addEventListener("toggle", () => {
      if (box.open) { opened.add(e.id); fetchTimeline(); } else opened.delete(e.id);
    });
    if (opened.has(e.id)) fetchTimeline();
    return box;
  };

  const rowFor = (e) => {
    const p = partsOf(e);
    return h("tr", { class: `sev-row-${e.severity}`, dataset: itemData(e) },
      mayAct ? h("td", { class: "hi-select" }, p.box) : null,
      h("td", { class: "hi-sev" }, p.severity),
      h("td", { class: "hi-problem" }, h("strong", { class: "hi-title", title: `Reported as ${e.kind}` }, p.title),
        p.detail ? h("span", { class: "hi-detail" }, p.detail) : null, timelineFor(e)),
      h("td", { class: "hi-node" }, p.node),
      h("td", { class: "hi-site" }, p.site),
      h("td", { class: "hi-first" }, p.first),
      h("td", { class: "hi-last" }, p.last),
      h("td", { class: "hi-state" }, p.state),
      mayAct ? h("td", { class: "hi-actions" }, p.actions) : null);
  };

  const cardFor = (e) => {
    const p = partsOf(e);
    const fact = (label, ...value) => [h("dt", {}, label), h("dd", {}, value)];
    return h("li", { class: `health-card sev-row-${e.severity}`, dataset: itemData(e) },
      h("div", { class: "hc-top" }, p.box, p.severity, h("h3", { class: "hi-title", title: `Reported as ${e.kind}` }, p.title)),
      p.detail ? h("p", { class: "hi-detail" }, p.detail) : null,
      h("dl", { class: "hc-facts" }, fact("Node", p.node), fact("Site", p.site), fact("First seen", p.first),
        fact("Last seen", p.last), fact("State", p.state)),
      timelineFor(e),
      mayAct ? h("div", { class: "hi-actions" }, p.actions) : null);
  };

  // The events' container now (the table's body or the list of cards) and its count line.
  const items = () => (narrow.matches ? cards : tbody);
  const countLine = () => (narrow.matches ? cardsCount : caption);

  const show = () => {
    // A live refresh must not lose the keyboard's place: put focus back on the same control.
    const focused = view.contains(document.activeElement) ? document.activeElement?.dataset?.focusKey : null;
    for (const id of [...selected]) if (!rows.some((r) => r.id === id)) selected.delete(id);
    fill(tbody, narrow.matches ? null : rows.map(rowFor));
    fill(cards, narrow.matches ? rows.map(cardFor) : null);
    view.querySelector(".health-list").hidden = narrow.matches;
    view.querySelector(".health-card-list").hidden = !narrow.matches;
    if (focused) items().querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
    caption.textContent = cardsCount.textContent = rows.length
      ? `${plural(rows.length, "event")}${cursor ? " shown (more below)" : ""}, newest first`
      : "No events.";
    empty.hidden = rows.length > 0;
    fill(empty, rows.length ? null : [
      h("p", {}, filtersActive() ? "No health event matches these filters." : "No open health events."),
      filtersActive() ? h("button", { type: "button", onclick: () => clearFilters() }, "Clear filters") : null,
    ]);
    more.hidden = !cursor;
    updateBulk();
  };

  const updateBulk = () => {
    const chosen = rows.filter((r) => selected.has(r.id));
    selectedCount.textContent = chosen.length ? `${chosen.length} selected.` : "None selected.";
    // Only the actions that some selected event allows are offered.
    for (const button of bulkButtons) { button.hidden = !chosen.some((e) => allows(e, button.dataset.action)); button.disabled = false; }
    selectAll.checked = rows.length > 0 && chosen.length === rows.length;
    selectAll.indeterminate = chosen.length > 0 && chosen.length < rows.length;
    selectAll.disabled = !rows.length;
  };
  selectAll.addEventListener("change", () => {
    for (const r of rows) if (selectAll.checked) selected.add(r.id); else selected.delete(r.id);
    show();
  });

  // -- loading ----------------------------------------------------------------------------------
  const loadNodeNames = async () => {
    if (!can("node:read")) return;
    try { nodeNames = new Map((await listAll("/api/v1/nodes")).map((n) => [n.id, n.name])); } catch { /* names are a convenience */ }
  };

  const setOptions = (control, anyLabel, values, label) => {
    const current = control.value;
    fill(control, h("option", { value: "" }, anyLabel),
      values.filter((v) => v.value !== null).map((v) => h("option", { value: v.value }, `${label(v.value)} (${v.count})`)));
    if (current && ![...control.options].some((o) => o.value === current)) control.append(h("option", { value: current }, `${label(current)} (0)`));
    control.value = current;
  };

  const load = async ({ append = false } = {}) => {
    if (closed) return;
    const mine = ++loading;
    const f = filters();
    setHashParams(f);
    try {
      // Every kind under the other filters: the options of "Problem" and what the text search matches.
      const kindFacet = (await api("/api/v1/health-events/facets", { params: { ...apiParams([], "kind"), fields: "kind" } })).data.kind ?? [];
      if (mine !== loading || closed) return;
      const kinds = kindFacet.map((k) => k.value).filter((k) => k !== null);
      const p = apiParams(kinds);
      exportLink.href = `/api/v1/health-events/export${query({ ...p, format: "csv" })}`;
      const limit = append ? PAGE : Math.min(200, Math.max(PAGE, rows.length));
      const [page, ...facets] = await Promise.all([
        api("/api/v1/health-events", { params: { ...p, limit, cursor: append ? cursor : null } }),
        ...["site", "severity", "node", "state"].map((name) =>
          api("/api/v1/health-events/facets", { params: { ...apiParams(kinds, name), fields: FILTERS[name] } }).then((b) => b.data[FILTERS[name]] ?? [])),
      ]);
      if (mine !== loading || closed) return;
      const unknown = page.data.filter((e) => e.node_id !== null && !nodeNames.has(e.node_id) && !namesTried.has(e.node_id));
      if (unknown.length) {
        for (const e of unknown) namesTried.add(e.node_id);
        await loadNodeNames();
        if (mine !== loading || closed) return;
      }
      rows = append ? rows.concat(page.data.filter((e) => !rows.some((r) => r.id === e.id))) : page.data;
      cursor = page.meta?.next_cursor ?? null;
      const [siteFacet, severityFacet, nodeFacet, stateFacet] = facets;
      setOptions(kindSel, "Any problem", kindFacet, kindTitle);
      setOptions(siteSel, "Any site", siteFacet, (v) => v);
      setOptions(severitySel, "Any severity", SEVERITIES.map((s) => ({ value: s, count: severityFacet.find((v) => v.value === s)?.count ?? 0 })), (v) => v);
      setOptions(nodeSel, "Any node", nodeFacet, nodeLabel);
      const counts = Object.fromEntries(stateFacet.map((v) => [v.value, v.count]));
      for (const option of stateSel.options) {
        const choice = STATE_CHOICES.find(([v]) => v === option.value);
        const n = choice[2].length ? choice[2].reduce((sum, s) => sum + (counts[s] ?? 0), 0) : Object.values(counts).reduce((a, b) => a + b, 0);
        option.textContent = `${choice[1]} (${n})`;
      }
      error.textContent = "";
      show();
    } catch (err) {
      if (mine === loading) error.textContent = `Could not load the health events: ${err.message}`;
    }
  };

  const changed = () => { summary.textContent = ""; load(); };
  const clearFilters = () => {
    for (const control of Object.values(controls)) control.value = "";
    changed();
  };
  for (const control of [stateSel, siteSel, severitySel, kindSel, nodeSel]) control.addEventListener("change", changed);
  let typing = null;
  text.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(changed, 400); });

  // -- actions ----------------------------------------------------------------------------------
  const act = async (event, action, button) => {
    const spec = ACTIONS[action];
    let body = {};
    if (action === "suppress") {
      const until = await askUntil(`Suppress ${what(event)}`);
      if (!until) { button.focus(); return; }
      body = { until };
    }
    button.disabled = true;
    const index = rows.findIndex((r) => r.id === event.id);
    try {
      const { data } = await api(`/api/v1/health-events/${encodeURIComponent(event.id)}/${action}`, { method: "POST", body });
      notify(`${what(event)}: ${spec.done}${data.state === "suppressed" ? ` until ${when(data.suppressed_until)}` : ""}.`);
      rows = rows.map((r) => (r.id === data.id ? data : r));
      await load();
      // The row may have left the list (another state): keep the keyboard near where it was.
      if (!view.contains(document.activeElement) || document.activeElement === document.body) {
        const shown = [...items().children];
        const next = shown[Math.min(index, shown.length - 1)];
        (next?.querySelector(".hi-actions button") ?? countLine()).focus();
      }
    } catch (err) {
      button.disabled = false;
      notify(`Could not ${(spec.verb ?? spec.label).toLowerCase()} ${what(event)}: ${err.message}`, "error");
    }
  };

  const bulk = async (action, button) => {
    const spec = ACTIONS[action];
    const chosen = rows.filter((r) => selected.has(r.id));
    const ids = chosen.filter((e) => allows(e, action)).map((e) => e.id);
    const skipped = chosen.length - ids.length;
    if (!ids.length) return;
    const body = { ids: [], action };
    if (action === "suppress") {
      const until = await askUntil(`Suppress ${plural(ids.length, "selected event")}`);
      if (!until) { button.focus(); return; }
      body.until = until;
    }
    for (const button of bulkButtons) button.disabled = true;
    summary.textContent = `${spec.verb ?? spec.label}: working on ${plural(ids.length, "event")}…`;
    const byId = new Map(rows.map((r) => [r.id, r]));
    const results = [];
    try {
      for (let i = 0; i < ids.length; i += BULK_MAX) {
        const { data } = await api("/api/v1/health-events/bulk-lifecycle", { method: "POST", body: { ...body, ids: ids.slice(i, i + BULK_MAX) } });
        results.push(...data);
      }
    } catch (err) {
      summary.textContent = `${results.length ? `${results.filter((r) => r.ok).length} ${spec.done} before an error. ` : ""}Could not ${(spec.verb ?? spec.label).toLowerCase()} the selection: ${err.message}`;
      await load();
      return;
    }
    const failed = results.filter((r) => !r.ok);
    const done = results.length - failed.length;
    for (const r of results) if (r.ok) selected.delete(r.id);
    const parts = [`${plural(done, "event")} ${spec.done}.`];
    if (failed.length) {
      parts.push(`${failed.length} not: ${failed.map((r) => `${byId.has(r.id) ? what(byId.get(r.id)) : r.id}: ${r.error?.message ?? r.error?.code ?? "failed"}`).join("; ")}.`);
    }
    if (skipped) parts.push(`${plural(skipped, "other selected event")} left as ${skipped === 1 ? "it was: its" : "they were: their"} state does not allow this.`);
    summary.textContent = parts.join(" ");
    summary.classList.toggle("has-failures", failed.length > 0);
    await load();
    if (document.activeElement === document.body || !view.contains(document.activeElement)) selectAll.focus();
  };

  // -- live -------------------------------------------------------------------------------------
  // A burst of changes (a bulk action, a node repeating a report) makes one reload, at most one a second.
  let pending = null;
  const soon = () => { pending ??= setTimeout(() => { pending = null; load(); }, 1000); };
  let events = null;
  let poll = null;
  if (can("node:read")) {
    events = follow("/api/v1/events/stream", Object.fromEntries(LIVE_EVENTS.map((type) => [type, soon])), {
      onReset: soon,
      onState: (state) => { live.textContent = state === "live" ? "live" : state; live.className = `badge small ${state === "live" ? "ready" : ""}`; },
    });
  } else {
    // The events stream needs node:read: without it, look again every half minute.
    live.textContent = "every 30 s";
    poll = setInterval(() => load(), 30000);
  }

  narrow.addEventListener("change", show);
  loadNodeNames().then(() => load());
  return () => { closed = true; narrow.removeEventListener("change", show); clearTimeout(pending); clearTimeout(typing); clearInterval(poll); events?.close(); };
}

// Channel-map plans: stage a template change across nodes (by site, tag or a list of nodes), see what
// changes on each node before anything is applied, apply it and watch each node confirm (or time out
// and be rolled back), and roll the whole plan back.
import { api, can, listAll } from "./api.js";
import { confirmAction, field, fill, h, notify, select, timeEl } from "./dom.js";
import { plural } from "./words.js";

const PLANS = "/api/v1/settings/channel-map-plans";
const POLL_MS = 1500;
const IN_FLIGHT = new Set(["applying", "rolling_back"]);
const STATE_WORDS = {
  staged: "staged", applying: "applying", applied: "applied", partially_applied: "partly applied",
  rolling_back: "rolling back", rolled_back: "rolled back", cancelled: "cancelled",
  pending: "pending", sent: "waiting", confirmed: "confirmed", failed: "failed", timed_out: "timed out",
};

const chip = (state) => h("span", { class: `state plan-state-${state}` }, STATE_WORDS[state] ?? state);
const listFromText = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
const templateText = (side) => (side ? `${side.name} (v${side.version})` : "none");

/** The counts of a plan in words: "2 of 3 confirmed, 1 timed out". */
function countWords(counts) {
  const parts = [`${counts.confirmed} of ${plural(counts.total, "node")} confirmed`];
  for (const [state, n] of Object.entries(counts)) {
    if (n && !["confirmed", "total"].includes(state)) parts.push(`${n} ${STATE_WORDS[state] ?? state}`);
  }
  return parts.join(", ");
}

/** What the plan changes on one node, as short lines. */
function changeLines(d) {
  if (!d.changes) return ["Nothing changes: it runs this template already."];
  const lines = [];
  if (d.inputs.added.length) lines.push(`maps ${plural(d.inputs.added.length, "input")} ${d.inputs.added.join(", ")}`);
  if (d.inputs.removed.length) lines.push(`stops mapping ${plural(d.inputs.removed.length, "input")} ${d.inputs.removed.join(", ")}`);
  for (const n of d.names) lines.push(`input ${n.input}: ${n.before} → ${n.after}`);
  for (const s of d.settings) lines.push(`input ${s.input} ${s.field.replace("_db", "")}: ${s.before ?? "none"} → ${s.after ?? "none"}`);
  for (const p of d.programmes.added) lines.push(`new programme ${p}`);
  for (const p of d.programmes.removed) lines.push(`no more programme ${p}`);
  for (const p of d.programmes.changed) lines.push(`programme ${p.name}: ${p.before.join(", ")} → ${p.after.join(", ")}`);
  if (!d.planned) lines.push("unassigned: every input becomes its own channel");
  if (d.same_channels && d.planned) lines.push("the same channels, under another template");
  return lines;
}

function stageForm() {
  const name = h("input", { name: "name", autocomplete: "off", maxLength: 100, required: true });
  const template = select([["", "Loading templates…"]], "", { name: "template_id" });
  const sites = h("input", { name: "sites", autocomplete: "off", spellcheck: "false", placeholder: "e.g. north, south" });
  const tags = h("input", { name: "tags", autocomplete: "off", spellcheck: "false", placeholder: "e.g. stage" });
  const nodes = h("select", { name: "node_ids", multiple: true, size: 4 });
  const timeout = h("input", { name: "timeout_s", type: "number", min: 5, max: 3600, step: 1, value: 120 });
  const description = h("input", { name: "description", autocomplete: "off", maxLength: 500 });
  const error = h("p", { class: "error", role: "alert" });
  (async () => {
    try {
      const [templates, found] = await Promise.all([listAll("/api/v1/settings/channel-map-templates"), listAll("/api/v1/nodes")]);
      fill(template, h("option", { value: "" }, "No template (unassign)"), templates.map((t) => h("option", { value: t.id }, `${t.name} (v${t.version})`)));
      if (templates.length) template.value = templates[0].id;
      fill(nodes, found.map((n) => h("option", { value: n.id }, n.site ? `${n.name} (${n.site})` : n.name)));
    } catch (err) { error.textContent = `Could not load templates and nodes: ${err.message}`; }
  })();
  const form = h("form", { class: "manage-form plan-form", noValidate: true, "aria-label": "Stage a plan", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!name.value.trim()) { error.textContent = "Name the plan, e.g. what it changes where."; name.focus(); return; }
    const target = { sites: listFromText(sites.value), tags: listFromText(tags.value), node_ids: [...nodes.selectedOptions].map((o) => o.value) };
    if (!target.sites.length && !target.tags.length && !target.node_ids.length) {
      error.textContent = "Choose the nodes: give a site or a tag, or pick nodes from the list.";
      sites.focus();
      return;
    }
    const body = { name: name.value.trim(), description: description.value.trim(), template_id: template.value || null, target, timeout_s: Number(timeout.value) };
    const button = event.submitter ?? form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const { data } = await api(PLANS, { method: "POST", body });
      location.hash = `#/plans/${encodeURIComponent(data.id)}`;
    } catch (err) {
      const fields = err.detail?.fields ? Object.entries(err.detail.fields).map(([k, v]) => `${k}: ${v}`).join("; ") : "";
      error.textContent = `Could not stage the plan: ${fields || err.message}`;
    } finally { button.disabled = false; }
  } },
  field("Name", name), field("Template", template), field("Sites", sites, "Comma-separated; empty: any site."),
  field("Tags", tags, "Comma-separated; nodes with any of them."), field("Nodes", nodes, "Also these nodes (Ctrl or ⌘ to pick several)."),
  field("Confirm within (s)", timeout, "A node that does not confirm in time is rolled back."), field("Description", description),
  h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Stage plan")), error);
  return h("section", { class: "manage-card plan-stage", "aria-labelledby": "stage-h" },
    h("h3", { id: "stage-h" }, "Stage a plan"),
    h("p", { class: "hint" }, "Nothing changes on any node until you apply the plan; first you see what changes on each."), form);
}

export function renderPlans(view) {
  const tbody = h("tbody");
  const caption = h("caption", {}, "Loading…");
  const state = select([["", "Any"], ...Object.keys(STATE_WORDS).slice(0, 7).map((s) => [s, STATE_WORDS[s]])], "", { name: "state" });
  const q = h("input", { type: "search", name: "q", placeholder: "name or description" });
  const error = h("p", { class: "error", role: "alert" });
  const load = async () => {
    try {
      const plans = (await api(PLANS, { params: { state: state.value, q: q.value.trim(), limit: 100 } })).data;
      caption.textContent = plans.length ? `${plural(plans.length, "plan")}, newest first` : "No plan matches.";
      fill(tbody, plans.length ? plans.map((p) => h("tr", {},
        h("td", {}, h("a", { href: `#/plans/${encodeURIComponent(p.id)}` }, p.name)),
        h("td", {}, p.template_name ?? (p.template_id ? p.template_id : "none (unassign)")),
        h("td", {}, chip(p.state)), h("td", {}, countWords(p.counts)),
        h("td", { class: "col-site" }, p.site ?? "several"), h("td", { class: "col-created" }, timeEl(p.created_at)))) :
        h("tr", {}, h("td", { colSpan: 6 }, "No plans yet.")));
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the plans: ${err.message}`; }
  };
  state.addEventListener("change", load);
  fill(view, h("section", { class: "plans" },
    h("div", { class: "title-row" }, h("h2", {}, "Channel-map plans")),
    can("settings:manage") ? stageForm() : null,
    h("form", { class: "filters", role: "search", "aria-label": "Filter plans", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("State", state), field("Search", q), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "plan-table" }, caption,
      h("thead", {}, h("tr", {}, [["Plan"], ["Template"], ["State"], ["Nodes"], ["Site", "col-site"], ["Staged", "col-created"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody))));
  load();
}

function nodeRow(row, diff) {
  const when = row.confirmed_at ? ["confirmed ", timeEl(row.confirmed_at)] : row.deadline ? ["until ", timeEl(row.deadline)] : "—";
  return h("tr", { dataset: { nodeId: row.node_id } },
    h("td", {}, h("a", { href: `#/nodes/${encodeURIComponent(row.node_id)}` }, row.node_name || row.node_id)),
    h("td", { class: "col-site" }, row.site ?? "—"),
    h("td", {}, diff ? templateText(diff.current) : "—"),
    h("td", { class: "plan-changes" }, diff ? h("ul", {}, changeLines(diff).map((line) => h("li", {}, line))) : "—"),
    h("td", {}, chip(row.state), row.rolled_back_at && row.state !== "rolled_back" ? h("span", { class: "hint" }, " rolled back") : null,
      row.error ? h("p", { class: "plan-error" }, row.error) : null),
    h("td", { class: "col-when" }, when));
}

export function renderPlan(view, id) {
  let timer = null;
  let gone = false;
  const heading = h("h2", {}, "Plan");
  const facts = h("dl", { class: "facts" });
  const buttons = h("div", { class: "button-row" });
  const status = h("p", { class: "plan-progress", role: "status" });
  const error = h("p", { class: "error", role: "alert" });
  const tbody = h("tbody");
  const caption = h("caption", {}, "Loading…");
  const url = `${PLANS}/${encodeURIComponent(id)}`;

  const act = async (verb, question, message, danger = false) => {
    if (question && !(await confirmAction(question[0], question[1], question[2], danger))) return;
    try {
      if (verb === "delete") {
        await api(url, { method: "DELETE" });
        notify("The plan is deleted.");
        location.hash = "#/plans";
        return;
      }
      await api(`${url}/${verb}`, { method: "POST" });
      notify(message);
      await load();
    } catch (err) { error.textContent = `Could not ${verb === "rollback" ? "roll back" : verb} the plan: ${err.message}`; }
  };

  const load = async () => {
    let plan, diff;
    try {
      [plan, diff] = await Promise.all([api(url).then((b) => b.data), api(`${url}/diff`).then((b) => b.data)]);
    } catch (err) {
      if (err.status === 404) fill(view, h("section", {}, h("h2", {}, "Plan"), h("p", { class: "error", role: "alert" }, "There is no such plan, or it is not in your sites."), h("a", { href: "#/plans" }, "All plans")));
      else error.textContent = `Could not load the plan: ${err.message}`;
      return;
    }
    if (gone) return;
    error.textContent = "";
    heading.textContent = `Plan ${plan.name}`;
    const target = plan.target;
    fill(facts, [
      ["State", chip(plan.state)],
      ["Template", plan.template_id ? `${plan.template_name ?? plan.template_id} (v${plan.template_version ?? "?"})` : "none: unassigns"],
      ["Target", [target.sites.length ? `sites ${target.sites.join(", ")}` : null, target.tags.length ? `tags ${target.tags.join(", ")}` : null,
        target.node_ids.length ? plural(target.node_ids.length, "listed node") : null].filter(Boolean).join("; ")],
      ["Confirm within", `${plan.timeout_s} s`],
      ["Staged", [timeEl(plan.created_at), plan.created_by?.name ? ` by ${plan.created_by.name}` : ""]],
      ["Applied", plan.applied_at ? timeEl(plan.applied_at) : "—"],
      ...(plan.rollback_at ? [["Rolled back", timeEl(plan.rollback_at)]] : []),
      ...(plan.description ? [["Description", plan.description]] : []),
    ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    status.textContent = `${countWords(plan.counts)}.` + (IN_FLIGHT.has(plan.state) ? " Waiting for the nodes…" : "");
    const manage = can("settings:manage");
    const a = plan.actions;
    fill(buttons, manage ? [
      a.apply.allowed ? h("button", { type: "button", class: "primary", onclick: () => act("apply",
        ["Apply this plan?", `Each of the ${plural(plan.counts.total, "node")} gets the template and must confirm within ${plan.timeout_s} s; a node that does not is rolled back.`, "Apply"],
        "The plan is applying: each node confirms as it goes.") }, "Apply") : null,
      a.rollback.allowed ? h("button", { type: "button", class: "danger", onclick: () => act("rollback",
        ["Roll back this plan?", "Every node gets back the template it ran before the plan.", "Roll back"], "The plan is rolling back.", true) }, "Roll back") : null,
      a.cancel.allowed ? h("button", { type: "button", onclick: () => act("cancel", null, "The plan is cancelled.") }, "Cancel plan") : null,
      a.delete.allowed ? h("button", { type: "button", class: "danger", onclick: () => act("delete",
        ["Delete this plan?", "The nodes keep what they run; only the plan and its record go.", "Delete"], "", true) }, "Delete") : null,
    ] : h("p", { class: "hint" }, "Applying and rolling back need the permission settings:manage."));
    const diffs = new Map(diff.nodes.map((d) => [d.node_id, d]));
    caption.textContent = plan.state === "staged"
      ? `What the plan changes on ${plural(diff.summary.nodes, "node")} (${diff.summary.changing} change); nothing is applied yet`
      : `Each node: what it runs now and what would still change`;
    fill(tbody, plan.nodes.map((row) => nodeRow(row, diffs.get(row.node_id))));
    clearTimeout(timer);
    if (IN_FLIGHT.has(plan.state)) timer = setTimeout(load, POLL_MS);
  };

  fill(view, h("section", { class: "plan" },
    h("div", { class: "title-row" }, heading, h("a", { href: "#/plans" }, "All plans")),
    facts, buttons, status, error,
    h("div", { class: "table-wrap" }, h("table", { class: "plan-nodes" }, caption,
      h("thead", {}, h("tr", {}, [["Node"], ["Site", "col-site"], ["Runs now"], ["What changes"], ["State"], ["When", "col-when"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody))));
  load();
  return () => { gone = true; clearTimeout(timer); };
}

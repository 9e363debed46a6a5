// Retention (issue 20): the policies (which recordings, how long the hub keeps them, which providers must hold a
// confirmed copy first, the free space to hold), the recent runs with "Run now", and per policy a preview of what a
// run would delete now at the hub and at nodes, and what it holds, each with its reason.
import { api, can, listAll } from "./api.js";
import { bytes, confirmAction, field, fill, h, notify, timeEl } from "./dom.js";
import { plural } from "./words.js";

const POLICIES = "/api/v1/settings/retention-policies";
const RUNS = "/api/v1/retention-runs";
const PROVIDERS = "/api/v1/settings/upload-providers";
const GB = 1e9;
const RUN_POLL_MS = 1000;
const TRIGGERS = { schedule: "scheduled", manual: "by hand", emergency: "space short" };

const policyUrl = (id) => `${POLICIES}/${encodeURIComponent(id)}`;
const fieldsText = (err) => (err.detail?.fields ? Object.entries(err.detail.fields).map(([k, v]) => `${k}: ${v}`).join("; ") : err.message);
const listText = (values, none) => (values?.length ? values.join(", ") : none);
const keepText = (days) => (days === null || days === undefined ? "forever" : `${days} ${days === 1 ? "day" : "days"}`);
const gbText = (n) => (n ? bytes(n) : "none");

function coversText(p) {
  const parts = [];
  if (p.sites.length) parts.push(`sites ${p.sites.join(", ")}`);
  if (p.profile_ids.length) parts.push(`profiles ${p.profile_ids.join(", ")}`);
  if (p.tags.length) parts.push(`tags ${p.tags.join(", ")}`);
  return parts.length ? parts.join("; ") : "every recording";
}

async function providerNames() {
  try {
    return new Map((await listAll(PROVIDERS)).map((p) => [p.id, p.name]));
  } catch {
    return new Map(); // shown by id
  }
}

function runRow(run) {
  const state = run.state === "shortfall" ? `short by ${bytes(run.shortfall_bytes)}` : run.state;
  return h("tr", { dataset: { runId: run.id } },
    h("td", {}, timeEl(run.started_at)),
    h("td", {}, TRIGGERS[run.trigger] ?? run.trigger),
    h("td", {}, h("span", { class: `state state-${run.state}` }, state)),
    h("td", { class: "num" }, String(run.deleted)),
    h("td", { class: "num" }, bytes(run.freed_bytes)),
    h("td", { class: "num" }, String(run.held)),
    h("td", { class: "col-free" }, run.free_bytes_after === null || run.free_bytes_after === undefined ? "—"
      : `${bytes(run.free_bytes_after)}${run.floor_bytes ? ` (floor ${bytes(run.floor_bytes)})` : ""}`));
}

export function renderRetention(view) {
  const policyBody = h("tbody");
  const runBody = h("tbody");
  const policyCaption = h("caption", {}, "Loading…");
  const runCaption = h("caption", {}, "Loading…");
  const error = h("p", { class: "error", role: "alert" });
  let stopped = false;
  let timer = null;

  const load = async () => {
    try {
      const [policies, runs, names] = await Promise.all([listAll(POLICIES), api(RUNS, { params: { limit: 20 } }), providerNames()]);
      if (stopped) return;
      policyCaption.textContent = `${plural(policies.length, "policy", "policies")}; a recording follows the most specific that matches it, and nothing is deleted before every copy it requires is confirmed`;
      fill(policyBody, policies.length ? policies.map((p) => h("tr", { dataset: { policyId: p.id } },
        h("td", {}, h("a", { href: `#/retention/${encodeURIComponent(p.id)}` }, p.name), p.enabled ? null : h("span", { class: "hint" }, " (off)")),
        h("td", {}, coversText(p)),
        h("td", {}, keepText(p.keep_on_hub_days)),
        h("td", {}, listText(p.required_providers.map((id) => names.get(id) ?? id), "none")),
        h("td", {}, `hub ${gbText(p.min_free_bytes_hub)}, nodes ${gbText(p.min_free_bytes_node)}`),
        h("td", { class: "col-updated" }, timeEl(p.updated_at))))
        : h("tr", {}, h("td", { colSpan: 6, class: "hint" }, "No policy yet: the hub keeps every recording until one says otherwise.")));
      const list = runs.data;
      runCaption.textContent = list.length ? `The last ${plural(list.length, "run")}, newest first` : "No run yet";
      fill(runBody, list.length ? list.map(runRow) : h("tr", {}, h("td", { colSpan: 7, class: "hint" }, "Retention has not run yet.")));
      error.textContent = "";
    } catch (err) { if (!stopped) error.textContent = `Could not load retention: ${err.message}`; }
  };

  const follow = (runId) => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (stopped) return;
      try {
        const run = (await api(`${RUNS}/${encodeURIComponent(runId)}`)).data;
        if (!run.finished_at) { follow(runId); return; }
        notify(`Retention run done: ${plural(run.deleted, "copy", "copies")} deleted (${bytes(run.freed_bytes)}), ${run.held} held.`);
        load();
      } catch (err) { notify(`Could not follow the run: ${err.message}`, "error"); }
    }, RUN_POLL_MS);
  };

  const manage = can("settings:manage");
  const runNow = manage ? h("button", { type: "button", onclick: async () => {
    try {
      const { data } = await api(RUNS, { method: "POST" });
      notify("Retention run started.");
      load();
      follow(data.id);
    } catch (err) { notify(`Could not start a run: ${err.message}`, "error"); }
  } }, "Run now") : null;

  fill(view, h("section", { class: "retention" },
    h("div", { class: "title-row" }, h("h2", {}, "Retention"),
      manage ? h("a", { class: "button", href: "#/retention/new" }, "New policy") : null, runNow),
    h("p", { class: "hint" }, "How long the hub keeps recordings, which off-site copies must be confirmed first, and the free space to hold on the hub and on nodes. Recordings under legal hold are never deleted."),
    error,
    h("section", { "aria-labelledby": "rp-h" }, h("h3", { id: "rp-h" }, "Policies"),
      h("div", { class: "table-wrap" }, h("table", { class: "retention-table" }, policyCaption,
        h("thead", {}, h("tr", {}, [["Policy"], ["Covers"], ["Hub keeps"], ["Confirmed first on"], ["Free space held"], ["Changed", "col-updated"]]
          .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), policyBody))),
    h("section", { "aria-labelledby": "rr-h" }, h("h3", { id: "rr-h" }, "Recent runs"),
      h("div", { class: "table-wrap" }, h("table", { class: "retention-runs" }, runCaption,
        h("thead", {}, h("tr", {}, [["Started"], ["Trigger"], ["Outcome"], ["Deleted", "num"], ["Freed", "num"], ["Held", "num"], ["Free after", "col-free"]]
          .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), runBody)))));
  load();
  return () => { stopped = true; clearTimeout(timer); };
}

/** The policy form; `policy` null for a new one. Resolves `onSaved(policy)` after a save. */
function policyForm(policy, names, onSaved) {
  const manage = can("settings:manage");
  const disabled = !manage;
  const text = (name, value, attrs = {}) => h("input", { name, value: value ?? "", autocomplete: "off", disabled, ...attrs });
  const inputs = {
    name: text("name", policy?.name, { maxLength: 100, required: true }),
    sites: text("sites", listText(policy?.sites, "")),
    profile_ids: text("profile_ids", listText(policy?.profile_ids, "")),
    tags: text("tags", listText(policy?.tags, "")),
    keep_on_hub_days: h("input", { type: "number", name: "keep_on_hub_days", min: 0, max: 36500, step: "any", disabled,
      value: policy?.keep_on_hub_days ?? "", placeholder: "forever" }),
    min_free_hub: h("input", { type: "number", name: "min_free_gb_hub", min: 0, step: "any", disabled, value: (policy?.min_free_bytes_hub ?? 0) / GB }),
    min_free_node: h("input", { type: "number", name: "min_free_gb_node", min: 0, step: "any", disabled, value: (policy?.min_free_bytes_node ?? 0) / GB }),
    priority: h("input", { type: "number", name: "priority", min: -1000, max: 1000, step: 1, disabled, value: policy?.priority ?? 0 }),
    description: h("textarea", { name: "description", rows: 2, maxLength: 500, disabled }, policy?.description ?? ""),
  };
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: policy ? policy.enabled : true, disabled });
  const nodeFirst = h("input", { type: "checkbox", name: "keep_on_node_until_hub_has_it",
    checked: policy ? policy.keep_on_node_until_hub_has_it : true, disabled });
  const required = new Set(policy?.required_providers ?? []);
  const known = new Map(names);
  for (const id of required) if (!known.has(id)) known.set(id, id);
  const providerBoxes = [...known].map(([id, label]) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "required_providers", value: id, checked: required.has(id), disabled }), label));
  const problem = h("p", { class: "error", role: "alert" });
  const split = (input) => input.value.split(",").map((s) => s.trim()).filter(Boolean);

  const body = () => {
    const days = inputs.keep_on_hub_days.value.trim();
    return {
      name: inputs.name.value.trim(),
      enabled: enabled.checked,
      description: inputs.description.value,
      sites: split(inputs.sites),
      profile_ids: split(inputs.profile_ids),
      tags: split(inputs.tags),
      keep_on_hub_days: days === "" ? null : Number(days),
      keep_on_node_until_hub_has_it: nodeFirst.checked,
      required_providers: providerBoxes.map((label) => label.querySelector("input")).filter((box) => box.checked).map((box) => box.value),
      min_free_bytes_hub: Math.round(Number(inputs.min_free_hub.value || 0) * GB),
      min_free_bytes_node: Math.round(Number(inputs.min_free_node.value || 0) * GB),
      priority: Number(inputs.priority.value || 0),
    };
  };

  const form = h("form", { class: "manage-form retention-form", "aria-label": policy ? "Retention policy" : "New retention policy", noValidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      problem.textContent = "";
      const sent = body();
      if (!sent.name) { problem.textContent = "Name the policy."; inputs.name.focus(); return; }
      try {
        const { data } = policy
          ? await api(policyUrl(policy.id), { method: "PATCH", body: { ...sent, version: policy.version } })
          : await api(POLICIES, { method: "POST", body: sent });
        onSaved(data);
      } catch (err) { problem.textContent = `Not saved: ${fieldsText(err)}`; }
    } },
  field("Name", inputs.name),
  field("Sites", inputs.sites, "Comma-separated site ids; empty: every site."),
  field("Profiles", inputs.profile_ids, "Recording profile ids; empty: any."),
  field("Tags", inputs.tags, "A recording must carry all of them; empty: any."),
  field("Hub keeps (days)", inputs.keep_on_hub_days, "Empty: forever."),
  field("Free space on the hub (GB)", inputs.min_free_hub, "Under it, confirmed recordings go, oldest first."),
  field("Free space on nodes (GB)", inputs.min_free_node),
  field("Priority", inputs.priority, "Breaks ties between equally specific policies."),
  h("fieldset", { class: "retention-providers" }, h("legend", {}, "Confirmed first on"),
    providerBoxes.length ? h("div", { class: "checks" }, providerBoxes) : h("p", { class: "hint" }, "No upload provider yet: the hub's copy needs no off-site copy."),
    h("p", { class: "hint" }, "The hub deletes its copy only once every provider ticked holds a copy synced with the original's checksum.")),
  h("div", { class: "retention-checks" },
    h("label", { class: "check" }, enabled, "Enabled"),
    h("label", { class: "check" }, nodeFirst, "Nodes delete their copy once the hub confirmed its own")),
  field("Description", inputs.description),
  manage ? h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, policy ? "Save" : "Create")) : null,
  problem);
  return form;
}

export function renderRetentionNew(view) {
  const slot = h("div");
  fill(view, h("section", { class: "retention" },
    h("p", {}, h("a", { href: "#/retention" }, "← Retention")),
    h("h2", {}, "New retention policy"), slot));
  providerNames().then((names) => fill(slot, policyForm(null, names, (policy) => {
    notify(`Policy ${policy.name} created.`);
    location.hash = `#/retention/${encodeURIComponent(policy.id)}`;
  })));
}

function previewTable(label, bucket, action) {
  const rows = bucket.items.map((r) => h("tr", { dataset: { recordingId: r.recording_id } },
    h("td", {}, h("a", { href: `#/recordings/${encodeURIComponent(r.recording_id)}` }, r.name || r.recording_id)),
    h("td", {}, r.site ?? "—"),
    h("td", {}, timeEl(r.ended_at)),
    h("td", { class: "num" }, bytes(r.size_bytes)),
    h("td", { class: "why" }, r.reason)));
  const more = bucket.truncated ? ` (the oldest ${bucket.items.length} shown)` : "";
  return h("div", { class: "table-wrap" }, h("table", { class: `retention-preview preview-${action}` },
    h("caption", {}, `${label}: ${plural(bucket.count, "recording")}, ${bytes(bucket.bytes)}${more}`),
    h("thead", {}, h("tr", {}, [["Recording"], ["Site"], ["Ended"], ["Size", "num"], ["Why"]].map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colSpan: 5, class: "hint" }, "None.")))));
}

export function renderRetentionPolicy(view, policyId) {
  const title = h("h2", {}, "Retention policy");
  const error = h("p", { class: "error", role: "alert" });
  const formSlot = h("div");
  const preview = h("div", { class: "retention-preview-slot" }, h("p", { class: "hint" }, "Loading the preview…"));
  const actions = h("div", { class: "button-row" });
  let stopped = false;

  const loadPreview = async () => {
    try {
      const data = (await api(`${policyUrl(policyId)}/preview`)).data;
      if (stopped) return;
      fill(preview,
        data.enabled ? null : h("p", { class: "hint" }, "The policy is off: this is what it would do if it were on."),
        h("h4", {}, "On the hub"),
        previewTable("Would delete now", data.hub.delete, "delete"), previewTable("Held", data.hub.held, "held"),
        h("h4", {}, "On nodes"),
        previewTable("Would delete now", data.node.delete, "delete"), previewTable("Held", data.node.held, "held"));
    } catch (err) { if (!stopped) fill(preview, h("p", { class: "error" }, `Could not load the preview: ${err.message}`)); }
  };

  const load = async () => {
    let policy;
    let names;
    try {
      [policy, names] = await Promise.all([api(policyUrl(policyId)).then((r) => r.data), providerNames()]);
    } catch (err) {
      error.textContent = err.status === 404 ? "This retention policy does not exist." : `Could not load the policy: ${err.message}`;
      fill(preview);
      return;
    }
    if (stopped) return;
    title.textContent = `Retention policy ${policy.name}`;
    fill(formSlot, policyForm(policy, names, (saved) => {
      notify(`Saved: version ${saved.version}.`);
      load();
    }));
    fill(actions, policy.actions?.delete?.allowed && can("settings:manage") ? h("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirmAction("Delete this policy?", "Recordings it covers fall to the next matching policy, or are kept.", "Delete", true))) return;
      try { await api(policyUrl(policyId), { method: "DELETE" }); notify("Policy deleted."); location.hash = "#/retention"; } catch (err) { notify(err.message, "error"); }
    } }, "Delete policy") : null);
    loadPreview();
  };

  fill(view, h("section", { class: "retention" },
    h("p", {}, h("a", { href: "#/retention" }, "← Retention")),
    title, error, formSlot, actions,
    h("section", { "aria-labelledby": "pv-h" }, h("h3", { id: "pv-h" }, "What a run would do now"),
      h("p", { class: "hint" }, "Among the recordings this policy governs. When free space falls under the floor, ages are waived but confirmations never are."),
      preview)));
  load();
  return () => { stopped = true; };
}

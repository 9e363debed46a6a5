// Upload policies: which recordings go to which providers, under which object key (with a live example),
// when (as soon as they are on the hub, or in a daily window on the site's clock) and by which route (the hub
// uploads, or the node uploads straight to S3). A saved policy can queue the recordings already there.
import { api, can, listAll } from "./api.js";
import { confirmAction, field, fill, h, notify, select, timeEl } from "./dom.js";
import { plural } from "./words.js";
import { fieldProblems } from "./field_problems.js";

export const POLICIES = "/api/v1/settings/upload-policies";
export const PROVIDERS = "/api/v1/settings/upload-providers";
const DEFAULT_TEMPLATE = "{site}/{node}/{yyyy}/{mm}/{dd}/{recording_id}.{ext}";
const PLACEHOLDERS = ["site", "node", "node_name", "recording_id", "name", "ext", "profile", "schedule_id", "yyyy", "mm", "dd", "hh", "min", "ss"];
const ROUTE_WORDS = { via_hub: "via the hub", direct: "direct from the node" };
const STATUS_WORDS = { completed: "completed", interrupted: "interrupted" };

const policyUrl = (id) => `${POLICIES}/${encodeURIComponent(id)}`;
const listFromText = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

async function optional(promise, fallback) {
  try { return await promise; } catch { return fallback; }
}

/** "22:00–05:00 (site time)" or "as soon as completed". */
export function whenWords(p) {
  if (p.when !== "window") return "as soon as on the hub";
  return `daily ${p.window_start}–${p.window_end} (site time)${p.window_end < p.window_start ? ", over midnight" : ""}`;
}

/** Which recordings a policy takes, in words. */
export function criteriaWords(c) {
  const parts = [];
  if (c.sites?.length) parts.push(`site ${c.sites.join(", ")}`);
  if (c.node_ids?.length) parts.push(plural(c.node_ids.length, "node"));
  if (c.profile_ids?.length) parts.push(`profile ${c.profile_ids.join(", ")}`);
  if (c.tags?.length) parts.push(`tagged ${c.tags.join(" + ")}`);
  const statuses = c.statuses?.length ? c.statuses : ["completed", "interrupted"];
  parts.push(statuses.length === 2 ? "completed or interrupted" : statuses.map((s) => STATUS_WORDS[s] ?? s).join(", "));
  return parts.join("; ");
}

/** The key a template gives an example recording, as the hub would make it (values made safe the same way). */
export function exampleKey(template, { site = "north", zone = "UTC", useSite = false } = {}) {
  const unknown = [...template.matchAll(/\{([^{}]*)\}/g)].map((m) => m[1]).filter((name) => !PLACEHOLDERS.includes(name));
  if (!template) return { key: null, problem: "Give a key template." };
  if (unknown.length) return { key: null, problem: `Unknown placeholder {${unknown[0]}}; known: ${PLACEHOLDERS.join(", ")}.` };
  if (!template.includes("{recording_id}")) return { key: null, problem: "The key must contain {recording_id}, so each recording has its own." };
  if (template.startsWith("/") || template.split("/").some((s) => s === "" || s === "." || s === "..")) {
    return { key: null, problem: "No leading '/', no empty, '.' or '..' segments." };
  }
  const now = new Date();
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-GB", {
    timeZone: useSite ? zone : "UTC", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  }).formatToParts(now).map((p) => [p.type, p.value]));
  const values = {
    site, node: "nod_01JF3EXAMPLE", node_name: "Roof-mic", recording_id: "rec_01JF3K8EXAMPLE", name: "Dawn-chorus", ext: "wav",
    profile: "default", schedule_id: "unscheduled", yyyy: parts.year, mm: parts.month, dd: parts.day, hh: parts.hour, min: parts.minute, ss: parts.second,
  };
  return { key: template.replace(/\{([^{}]*)\}/g, (_, name) => values[name]), problem: null };
}

// -- the list ---------------------------------------------------------------------------------------------

export function renderPolicies(view) {
  let gone = false;
  const q = h("input", { type: "search", name: "q", placeholder: "name, description or key" });
  const enabled = select([["", "Any"], ["true", "Enabled"], ["false", "Disabled"]], "", { name: "enabled" });
  const route = select([["", "Any"], ["via_hub", "Via the hub"], ["direct", "Direct from the node"]], "", { name: "route" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  const load = async () => {
    try {
      const params = { q: q.value.trim(), enabled: enabled.value, route: route.value };
      const [policies, providers] = await Promise.all([listAll(POLICIES, params), optional(listAll(PROVIDERS), [])]);
      if (gone) return;
      const names = new Map(providers.map((p) => [p.id, p.name]));
      caption.textContent = policies.length ? plural(policies.length, "policy", "policies") : "No policy matches.";
      fill(tbody, policies.length ? policies.map((p) => h("tr", { dataset: { policyId: p.id } },
        h("td", {}, h("a", { href: `#/offsite/policies/${encodeURIComponent(p.id)}` }, p.name),
          p.description ? h("div", { class: "hint" }, p.description) : null),
        h("td", {}, h("span", { class: `state ${p.enabled ? "state-succeeded" : ""}` }, p.enabled ? "enabled" : "disabled")),
        h("td", { class: "col-providers" }, p.provider_ids.map((id) => names.get(id) ?? id).join(", ")),
        h("td", { class: "col-criteria" }, criteriaWords(p.criteria)),
        h("td", {}, whenWords(p)),
        h("td", {}, ROUTE_WORDS[p.route] ?? p.route),
        h("td", { class: "col-updated" }, timeEl(p.updated_at))))
        : h("tr", {}, h("td", { colSpan: 7 }, can("settings:manage") ? "No upload policies yet: make one with “New policy”." : "No upload policies yet.")));
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the policies: ${err.message}`; }
  };
  for (const el of [enabled, route]) el.addEventListener("change", load);
  fill(view, h("section", { class: "upload-policies" },
    h("div", { class: "title-row" }, h("h2", {}, "Upload policies"),
      h("a", { class: "button", href: "#/offsite/providers" }, "Providers"),
      h("a", { class: "button", href: "#/uploads" }, "Upload queue"),
      can("settings:manage") ? h("a", { class: "button primary", href: "#/offsite/policies/new" }, "New policy") : null),
    h("p", { class: "hint" }, "Which recordings are copied to which off-site providers, under which key, when and by which route."),
    h("form", { class: "filters", role: "search", "aria-label": "Filter policies", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Search", q), field("Enabled", enabled), field("Route", route), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "upload-policy-table" }, caption,
      h("thead", {}, h("tr", {}, [["Policy"], ["State"], ["Providers", "col-providers"], ["Recordings", "col-criteria"], ["When"], ["Route"], ["Changed", "col-updated"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody))));
  load();
  return () => { gone = true; };
}

// -- the form ---------------------------------------------------------------------------------------------

function checkboxes(name, legend, options, chosen, disabled, hint = null) {
  const boxes = options.map(([value, label]) => h("input", { type: "checkbox", name, value, checked: chosen.includes(value), disabled }));
  const element = h("fieldset", { class: "checks upload-choices" }, h("legend", {}, legend),
    options.length ? options.map(([, label], i) => h("label", { class: "check" }, boxes[i], label)) : h("span", { class: "hint" }, hint ?? "None to choose from."));
  return { element, value: () => boxes.filter((b) => b.checked).map((b) => b.value) };
}

function policyForm(policy, { providers, sites, profiles, manage, onSaved }) {
  const p = policy ?? { name: "", description: "", enabled: true, criteria: {}, provider_ids: [], key_template: DEFAULT_TEMPLATE, key_time_zone: "utc",
    when: "completed", window_start: null, window_end: null, bandwidth_cap_bps: null, route: "via_hub", priority: 0 };
  const slots = fieldProblems();
  const off = !manage;
  const name = h("input", { name: "name", value: p.name, maxLength: 100, required: true, autocomplete: "off", disabled: off });
  const description = h("input", { name: "description", value: p.description, maxLength: 500, disabled: off });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: p.enabled, disabled: off });
  const providerBoxes = checkboxes("provider_ids", "Providers", providers.map((x) => [x.id, `${x.name} (${x.kind}${x.enabled === false ? ", disabled" : ""})`]),
    p.provider_ids, off, "No upload providers yet: add one under Off-site first.");
  const c = p.criteria ?? {};
  const siteBoxes = checkboxes("sites", "Sites (none: every site)", sites.map((s) => [s.id, s.name && s.name !== s.id ? `${s.name} (${s.id})` : s.id]), c.sites ?? [], off);
  const profileBoxes = checkboxes("profile_ids", "Recording profiles (none: any)", profiles.map((x) => [x.id, x.name]), c.profile_ids ?? [], off);
  const statusBoxes = checkboxes("statuses", "How the recording ended", [["completed", "Completed"], ["interrupted", "Interrupted (kept what was captured)"]],
    c.statuses?.length ? c.statuses : ["completed", "interrupted"], off);
  const nodeIds = h("input", { name: "node_ids", value: (c.node_ids ?? []).join(", "), disabled: off, placeholder: "nod_…, nod_…" });
  const tags = h("input", { name: "tags", value: (c.tags ?? []).join(", "), disabled: off, placeholder: "birds, dawn" });
  const template = h("input", { name: "key_template", value: p.key_template, maxLength: 500, disabled: off, spellcheck: "false", class: "mono" });
  const zone = select([["utc", "UTC"], ["site", "The site's time zone"]], p.key_time_zone, { name: "key_time_zone", disabled: off });
  const example = h("output", { class: "upload-key-example", "aria-live": "polite" });
  const when = select([["completed", "As soon as it is on the hub"], ["window", "In a daily window"]], p.when, { name: "when", disabled: off });
  const start = h("input", { type: "time", name: "window_start", value: p.window_start ?? "01:00", disabled: off });
  const end = h("input", { type: "time", name: "window_end", value: p.window_end ?? "05:00", disabled: off });
  const windowBox = h("div", { class: "upload-window" }, slots.add("window_start", field("From (site time)", start)), slots.add("window_end", field("Until", end)));
  const cap = h("input", { type: "number", name: "bandwidth_cap", min: 0.01, step: 0.01, value: p.bandwidth_cap_bps ? (p.bandwidth_cap_bps / 1e6).toString() : "", disabled: off, placeholder: "no cap" });
  const route = select([["via_hub", "Via the hub (from its storage)"], ["direct", "Direct from the node (S3 only)"]], p.route, { name: "route", disabled: off });
  const priority = h("input", { type: "number", name: "priority", min: -1000, max: 1000, step: 1, value: p.priority, disabled: off });
  const error = h("p", { class: "error", role: "alert" });
  const exampleSite = () => siteBoxes.value()[0] ?? sites[0]?.id ?? "north";
  const showExample = () => {
    const site = sites.find((s) => s.id === exampleSite());
    const { key, problem } = exampleKey(template.value, { site: exampleSite(), zone: site?.time_zone ?? "UTC", useSite: zone.value === "site" });
    fill(example, key ? ["Example: ", h("code", { class: "wrap" }, key)] : h("span", { class: "field-problem" }, problem));
  };
  const showWindow = () => { windowBox.hidden = when.value !== "window"; };
  for (const el of [template, zone, siteBoxes.element]) el.addEventListener("input", showExample);
  zone.addEventListener("change", showExample);
  siteBoxes.element.addEventListener("change", showExample);
  when.addEventListener("change", showWindow);
  showExample();
  showWindow();

  const body = () => ({
    name: name.value.trim(), description: description.value.trim(), enabled: enabled.checked,
    provider_ids: providerBoxes.value(),
    criteria: { sites: siteBoxes.value(), node_ids: listFromText(nodeIds.value), profile_ids: profileBoxes.value(), tags: listFromText(tags.value), statuses: statusBoxes.value() },
    key_template: template.value.trim(), key_time_zone: zone.value, when: when.value,
    window_start: when.value === "window" ? start.value : null, window_end: when.value === "window" ? end.value : null,
    bandwidth_cap_bps: cap.value ? Math.round(Number(cap.value) * 1e6) : null,
    route: route.value, priority: Number(priority.value || 0),
  });
  const form = h("form", { class: "upload-policy-form", "aria-label": "Upload policy", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    slots.mark({});
    const value = body();
    if (!value.name) { slots.mark({ name: "Name the policy, e.g. where it sends what." }); name.focus(); return; }
    try {
      const saved = policy
        ? (await api(policyUrl(policy.id), { method: "PATCH", body: { ...value, version: policy.version } })).data
        : (await api(POLICIES, { method: "POST", body: value })).data;
      onSaved(saved);
    } catch (err) {
      const left = slots.mark(err.detail?.fields ?? {});
      error.textContent = err.status === 400 ? `Not saved: ${left.length ? left.join("; ") : "see the fields marked."}` : `Not saved: ${err.message}`;
      form.querySelector("[aria-invalid=true]")?.focus();
    }
  } },
  h("div", { class: "upload-form-grid" },
    slots.add("name", field("Name", name)), slots.add("description", field("Description", description)),
    h("label", { class: "check" }, enabled, "Enabled")),
  slots.add("provider_ids", providerBoxes.element),
  h("fieldset", { class: "upload-criteria" }, h("legend", {}, "Which recordings"),
    slots.add("criteria.sites", siteBoxes.element),
    h("div", { class: "upload-form-grid" },
      slots.add("criteria.node_ids", field("Only these nodes", nodeIds, "Node ids, comma-separated; empty: any node.")),
      slots.add("criteria.tags", field("Tagged with all of", tags, "The recording's tags (a schedule's travel with its takes); empty: any."))),
    slots.add("criteria.profile_ids", profileBoxes.element),
    slots.add("criteria.statuses", statusBoxes.element)),
  h("fieldset", { class: "upload-key" }, h("legend", {}, "Object key"),
    slots.add("key_template", field("Key template", template, `Placeholders: ${PLACEHOLDERS.map((x) => `{${x}}`).join(" ")}`)),
    slots.add("key_time_zone", field("Dates in", zone)), example),
  h("fieldset", { class: "upload-when" }, h("legend", {}, "When and how"),
    h("div", { class: "upload-form-grid" }, slots.add("when", field("Upload", when)), windowBox,
      slots.add("bandwidth_cap_bps", field("Bandwidth cap (MB/s)", cap, "Empty: no cap.")),
      slots.add("route", field("Route", route, "Direct: the node sends the file to S3 itself; the bytes never cross the hub.")),
      slots.add("priority", field("Priority", priority, "When two policies name one provider, the higher one's key and route win.")))),
  manage ? h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, policy ? "Save changes" : "Create policy")) : null,
  error);
  return form;
}

async function choices() {
  const [providers, sites, profiles] = await Promise.all([
    optional(listAll(PROVIDERS), []), optional(listAll("/api/v1/sites"), []), optional(listAll("/api/v1/settings/recording-profiles"), []),
  ]);
  return { providers, sites, profiles };
}

export function renderPolicyNew(view) {
  let gone = false;
  fill(view, h("section", { class: "upload-policies" }, h("h2", {}, "New upload policy"), h("p", { class: "hint" }, "Loading…")));
  (async () => {
    const lists = await choices();
    if (gone) return;
    fill(view, h("section", { class: "upload-policies" },
      h("div", { class: "title-row" }, h("h2", {}, "New upload policy"), h("a", { class: "button", href: "#/offsite/policies" }, "All policies")),
      policyForm(null, { ...lists, manage: can("settings:manage"), onSaved: (saved) => {
        notify(`Policy “${saved.name}” created. Recordings reaching the hub from now on are queued; “Queue existing recordings” takes those already there.`);
        location.hash = `#/offsite/policies/${encodeURIComponent(saved.id)}`;
      } })));
  })();
  return () => { gone = true; };
}

export function renderPolicy(view, id) {
  let gone = false;
  const manage = can("settings:manage");
  const draw = async () => {
    let detail;
    let lists;
    try {
      [detail, lists] = await Promise.all([api(policyUrl(id)).then((b) => b.data), choices()]);
    } catch (err) {
      if (!gone) fill(view, h("section", {}, h("h2", {}, "Upload policy"), h("p", { class: "error", role: "alert" }, err.status === 404 ? "There is no such policy." : `Could not load the policy: ${err.message}`)));
      return;
    }
    if (gone) return;
    const known = new Set(lists.providers.map((x) => x.id));
    const providers = [...lists.providers, ...detail.providers.filter((x) => !known.has(x.id)).map((x) => ({ id: x.id, name: x.name ?? x.id, kind: x.kind ?? "deleted", enabled: x.enabled }))];
    const applyResult = h("p", { role: "status", class: "hint" });
    const apply = h("button", { type: "button", disabled: !detail.actions.apply.allowed, title: detail.actions.apply.reason ?? "", onclick: async () => {
      apply.disabled = true;
      try {
        const { data } = await api(`${policyUrl(id)}/apply`, { method: "POST" });
        applyResult.textContent = `${plural(data.matched, "recording")} matched; ${plural(data.created, "upload")} queued now.`;
      } catch (err) { applyResult.textContent = `Could not queue: ${err.message}`; }
      apply.disabled = false;
    } }, "Queue existing recordings");
    const remove = h("button", { type: "button", class: "danger", onclick: async () => {
      if (!await confirmAction("Delete this policy?", `“${detail.name}” stops queueing recordings; its uploads not started yet leave the queue. Uploads done stay where they are.`, "Delete", true)) return;
      try {
        await api(policyUrl(id), { method: "DELETE" });
        notify(`Policy “${detail.name}” deleted.`);
        location.hash = "#/offsite/policies";
      } catch (err) { notify(`Could not delete: ${err.message}`, "error"); }
    } }, "Delete");
    fill(view, h("section", { class: "upload-policies" },
      h("div", { class: "title-row" }, h("h2", {}, detail.name),
        h("span", { class: `state ${detail.enabled ? "state-succeeded" : ""}` }, detail.enabled ? "enabled" : "disabled"),
        h("a", { class: "button", href: `#/uploads?policy_id=${encodeURIComponent(id)}` }, "Its uploads"),
        h("a", { class: "button", href: "#/offsite/policies" }, "All policies")),
      h("p", { class: "hint" }, `${criteriaWords(detail.criteria)} → ${detail.providers.map((x) => x.name ?? x.id).join(", ")}; ${whenWords(detail)}, ${ROUTE_WORDS[detail.route]}. Version ${detail.version}, changed `, timeEl(detail.updated_at), "."),
      manage ? h("div", { class: "button-row" }, apply, remove) : null, applyResult,
      policyForm(detail, { ...lists, providers, manage, onSaved: (saved) => { notify(`Policy “${saved.name}” saved (version ${saved.version}).`); draw(); } })));
  };
  draw();
  return () => { gone = true; };
}

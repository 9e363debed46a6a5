// The upload queue: one row per recording and provider, pending -> queued -> uploading -> synced | failed,
// with the runner's panel above it (when that module is there), counts by state as filter chips, progress,
// the last error, retry per item and for a selection of failed items, and queueing recordings by hand.
import { api, can, listAll, query } from "./api.js";
import { bytes, field, fill, h, hashParams, notify, select, setHashParams, timeEl } from "./dom.js";
import { plural } from "./words.js";

const QUEUE = "/api/v1/upload-queue";
const PROVIDERS = "/api/v1/settings/upload-providers";
const PAGE = 50;
const POLL_MS = 3000;
export const STATES = ["pending", "queued", "uploading", "synced", "failed"];
const STATE_CLASS = { synced: "state-succeeded", uploading: "state-uploading", failed: "state-failed", queued: "state-queued", pending: "" };
const FILTERS = ["provider_id", "site", "route", "policy_id"];
const FILTER_LABELS = { provider_id: "Provider", site: "Site", route: "Route", policy_id: "Policy" };
const ROUTE_WORDS = { via_hub: "via the hub", direct: "direct from the node" };

const itemUrl = (id) => `${QUEUE}/${encodeURIComponent(id)}`;

/** The runner's panel from ./upload_runner.js, or null while that module is not there (or fails). */
async function runnerPanel() {
  try {
    const module = await import("./upload_runner.js");
    return typeof module.runnerPanel === "function" ? await module.runnerPanel() : null;
  } catch {
    return null;
  }
}

export function stateChip(item) {
  return h("span", { class: `state ${STATE_CLASS[item.state] ?? ""}` }, item.state);
}

/** A progress bar with the bytes sent, or a dash when the size is not known yet. */
export function progressCell(item) {
  if (item.progress === null || item.progress === undefined) return h("span", { class: "hint" }, item.bytes_total ? bytes(item.bytes_total) : "—");
  const label = `${Math.round(item.progress * 100)} %`;
  return h("span", { class: "upload-progress" },
    h("progress", { max: 1, value: item.progress, "aria-label": `${item.recording_name ?? item.recording_id} to ${item.provider_name ?? item.provider_id}: ${label}` }),
    h("span", { class: "hint" }, item.state === "synced" ? bytes(item.bytes_total) : `${bytes(item.bytes_sent)} of ${bytes(item.bytes_total)}`));
}

async function retry(item) {
  try {
    await api(`${itemUrl(item.id)}/retry`, { method: "POST" });
    return true;
  } catch (err) {
    notify(`Could not retry ${item.recording_name ?? item.recording_id}: ${err.message}`, "error");
    return false;
  }
}

/** Queue recordings by hand: ids (one per line or comma-separated) to chosen providers, or by their policies. */
function enqueueForm(providers, onDone) {
  const ids = h("textarea", { name: "recording_ids", rows: 2, placeholder: "rec_…, rec_…", spellcheck: "false" });
  const boxes = providers.map((p) => h("input", { type: "checkbox", name: "enqueue_provider", value: p.id }));
  const result = h("p", { role: "status", class: "hint" });
  const form = h("form", { class: "upload-enqueue", "aria-label": "Queue recordings", onsubmit: async (event) => {
    event.preventDefault();
    const list = ids.value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
    if (!list.length) { result.textContent = "Give at least one recording id."; ids.focus(); return; }
    const chosen = boxes.filter((b) => b.checked).map((b) => b.value);
    try {
      const { data } = await api("/api/v1/bulk-upload-queue", { method: "POST", body: { ids: list, provider_ids: chosen.length ? chosen : null } });
      const ok = data.filter((r) => r.ok);
      const made = ok.reduce((n, r) => n + r.created, 0);
      const failed = data.filter((r) => !r.ok).map((r) => `${r.id}: ${r.error.message}`);
      result.textContent = `${plural(made, "upload")} queued for ${plural(ok.length, "recording")}.${failed.length ? ` Not queued: ${failed.join("; ")}` : ""}`;
      onDone();
    } catch (err) { result.textContent = `Could not queue: ${err.message}`; }
  } },
  field("Recording ids", ids, "From the recordings library; one per line or comma-separated."),
  h("fieldset", { class: "checks upload-choices" }, h("legend", {}, "To (none: the policies each recording matches)"),
    boxes.length ? providers.map((p, i) => h("label", { class: "check" }, boxes[i], `${p.name} (${p.kind})`)) : h("span", { class: "hint" }, "No providers to choose from.")),
  h("div", { class: "button-row" }, h("button", { type: "submit" }, "Queue")), result);
  return h("details", { class: "upload-enqueue-box" }, h("summary", {}, "Queue recordings by hand"), form);
}

export function renderUploads(view) {
  const initial = hashParams();
  let gone = false;
  let rows = [];
  let cursor = null;
  let timer = null;
  let panel = null;
  let state = initial.get("state") ?? "";
  const selected = new Set();
  const q = h("input", { type: "search", name: "q", placeholder: "recording id, key or error", value: initial.get("q") ?? "" });
  const selects = Object.fromEntries(FILTERS.map((name) => {
    const value = initial.get(name) ?? "";
    return [name, select([["", "Any"], ...(value ? [[value, value]] : [])], value, { name })];
  }));
  const chips = h("div", { class: "upload-chips", role: "group", "aria-label": "Show uploads in state" });
  const summary = h("p", { class: "upload-summary", role: "status" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) }, "Load more");
  const csv = h("a", { class: "button", href: `${QUEUE}/export?format=csv`, download: "uploads.csv" }, "Export CSV");
  const control = can("recording:control");
  const all = h("input", { type: "checkbox", "aria-label": "Select every failed upload shown", disabled: !control });
  const bulkRetry = h("button", { type: "button", disabled: true, onclick: async () => {
    bulkRetry.disabled = true;
    const chosen = rows.filter((r) => selected.has(r.id));
    let done = 0;
    for (const item of chosen) if (await retry(item)) done += 1;
    notify(`${plural(done, "failed upload")} sent back to the queue.`);
    selected.clear();
    load();
  } }, "Retry selected");
  const slot = h("div", { class: "upload-runner-slot" });

  const params = () => {
    const p = { q: q.value.trim(), state };
    for (const name of FILTERS) p[name] = selects[name].value;
    return p;
  };
  const updateBulk = () => {
    const failed = rows.filter((r) => r.state === "failed");
    for (const id of [...selected]) if (!failed.some((r) => r.id === id)) selected.delete(id);
    bulkRetry.disabled = !control || selected.size === 0;
    bulkRetry.textContent = selected.size ? `Retry ${plural(selected.size, "selected upload")}` : "Retry selected";
    all.checked = failed.length > 0 && failed.every((r) => selected.has(r.id));
    all.disabled = !control || failed.length === 0;
  };
  all.addEventListener("change", () => {
    for (const r of rows) if (r.state === "failed") { if (all.checked) selected.add(r.id); else selected.delete(r.id); }
    draw();
  });

  const row = (item) => {
    const pick = h("input", { type: "checkbox", checked: selected.has(item.id), disabled: !control || item.state !== "failed",
      "aria-label": `Select ${item.recording_name ?? item.recording_id} to ${item.provider_name ?? item.provider_id}` });
    pick.addEventListener("change", () => { if (pick.checked) selected.add(item.id); else selected.delete(item.id); updateBulk(); });
    const again = control && item.actions.retry.allowed
      ? h("button", { type: "button", class: "small", onclick: async () => { again.disabled = true; if (await retry(item)) load(); } }, "Retry")
      : null;
    return h("tr", { dataset: { itemId: item.id, state: item.state } },
      h("td", { class: "col-pick" }, pick),
      h("td", {}, h("a", { href: `#/uploads/${encodeURIComponent(item.id)}` }, item.recording_name ?? item.recording_id),
        h("div", { class: "hint" }, h("a", { href: `#/recordings/${encodeURIComponent(item.recording_id)}` }, "recording"), item.site ? ` · ${item.site}` : "")),
      h("td", {}, item.provider_name ?? item.provider_id, item.provider_kind ? h("span", { class: "hint" }, ` ${item.provider_kind}`) : null),
      h("td", {}, stateChip(item), item.state_reason ? h("div", { class: "hint" }, item.state_reason) : null,
        item.state === "failed" && item.next_attempt_at ? h("div", { class: "hint" }, "next try ", timeEl(item.next_attempt_at)) : null),
      h("td", { class: "col-progress" }, progressCell(item)),
      h("td", { class: "col-attempts" }, String(item.attempts)),
      h("td", { class: "col-error" }, item.last_error ? h("span", { class: "upload-error" }, item.last_error) : "—"),
      h("td", { class: "col-key" }, item.remote_key ? h("code", { class: "wrap" }, item.remote_key) : "—"),
      h("td", { class: "col-action" }, again));
  };
  const draw = () => {
    caption.textContent = rows.length ? `${cursor ? `${rows.length}+ uploads` : plural(rows.length, "upload")}${state ? ` ${state}` : ""}` : "No upload matches.";
    fill(tbody, rows.length ? rows.map(row) : h("tr", {}, h("td", { colSpan: 9 }, state || q.value ? "No upload matches these filters." : "Nothing queued yet: recordings are queued by upload policies as they reach the hub.")));
    updateBulk();
  };
  const drawChips = (overview) => {
    const states = overview?.states ?? {};
    fill(chips, [["", "All", overview?.total?.count], ...STATES.map((s) => [s, s, states[s]?.count])].map(([value, label, count]) =>
      h("button", { type: "button", class: `chip-filter ${value ? `state ${STATE_CLASS[value] ?? ""}` : ""}`, "aria-pressed": String(state === value),
        onclick: () => { state = value; load(); } }, `${label}${count === undefined ? "" : ` ${count}`}`)));
    if (overview) {
      summary.textContent = `${plural(overview.backlog.count, "upload")} to go (${bytes(overview.backlog.bytes)}); ${plural(states.synced?.count ?? 0, "upload")} synced (${bytes(states.synced?.bytes ?? 0)})${states.failed?.count ? `; ${states.failed.count} failed` : ""}.`;
    }
  };

  const load = async (append = false) => {
    clearTimeout(timer);
    const p = params();
    setHashParams(p);
    csv.href = `${QUEUE}/export${query({ ...p, format: "csv" })}`;
    try {
      const body = await api(QUEUE, { params: { ...p, limit: PAGE, cursor: append ? cursor : null } });
      if (gone) return;
      rows = append ? rows.concat(body.data) : body.data;
      cursor = body.meta?.next_cursor ?? null;
      more.hidden = !cursor;
      draw();
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the uploads: ${err.message}`; }
    try {
      const [overview, facets] = await Promise.all([
        api(`${QUEUE}/overview`).then((b) => b.data),
        api(`${QUEUE}/facets`, { params: { ...p, fields: FILTERS } }).then((b) => b.data),
      ]);
      if (gone) return;
      drawChips(overview);
      for (const name of FILTERS) {
        const el = selects[name];
        const current = el.value;
        const named = name === "provider_id" ? providerNames : name === "policy_id" ? policyNames : null;
        fill(el, h("option", { value: "" }, "Any"), (facets[name] ?? []).filter((v) => v.value !== null && v.value !== "")
          .map((v) => h("option", { value: v.value }, `${named?.get(v.value) ?? ROUTE_WORDS[v.value] ?? v.value} (${v.count})`)));
        if (current && ![...el.options].some((o) => o.value === current)) el.append(h("option", { value: current }, current));
        el.value = current;
      }
    } catch { /* counts are a convenience */ }
    if (!gone) timer = setTimeout(() => { if (!append && !gone) refresh(); }, POLL_MS);
  };
  // Refresh the rows shown (not appending), keeping the selection.
  const refresh = () => load();
  let providerNames = new Map();
  let policyNames = new Map();
  for (const el of Object.values(selects)) el.addEventListener("change", () => load());
  drawChips(null);

  const head = h("div", { class: "title-row" }, h("h2", {}, "Uploads"), csv,
    can("settings:read") ? h("a", { class: "button", href: "#/offsite/policies" }, "Upload policies") : null);
  const tools = h("div", { class: "button-row upload-bulk" }, bulkRetry);
  const enqueueSlot = h("div");
  fill(view, h("section", { class: "uploads" },
    head, slot, summary, chips,
    h("form", { class: "filters", role: "search", "aria-label": "Filter uploads", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Search", q), FILTERS.map((name) => field(FILTER_LABELS[name], selects[name])), h("button", { type: "submit" }, "Filter")),
    control ? tools : null, enqueueSlot, error,
    h("div", { class: "table-wrap" }, h("table", { class: "upload-table" }, caption,
      h("thead", {}, h("tr", {},
        h("th", { scope: "col", class: "col-pick" }, all),
        [["Recording"], ["Provider"], ["State"], ["Progress", "col-progress"], ["Tries", "col-attempts"], ["Last error", "col-error"], ["Key", "col-key"],
          [h("span", { class: "visually-hidden" }, "Actions"), "col-action"]]
          .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody)),
    more));
  (async () => {
    const settings = can("settings:read");
    const [made, providers, policies] = await Promise.all([runnerPanel(),
      settings ? listAll(PROVIDERS).catch(() => []) : Promise.resolve([]),
      settings ? listAll("/api/v1/settings/upload-policies").catch(() => []) : Promise.resolve([])]);
    if (gone) { made?.stop?.(); return; }
    panel = made;
    if (panel?.element) slot.append(panel.element);
    providerNames = new Map(providers.map((p) => [p.id, p.name]));
    policyNames = new Map(policies.map((p) => [p.id, p.name]));
    if (control) enqueueSlot.append(enqueueForm(providers, () => load()));
  })();
  load();
  return () => { gone = true; clearTimeout(timer); panel?.stop?.(); };
}

// -- one item ------------------------------------------------------------------------------------------------

export function renderUpload(view, id) {
  let gone = false;
  let timer = null;
  const draw = async () => {
    let item;
    try {
      item = (await api(itemUrl(id))).data;
    } catch (err) {
      if (!gone) fill(view, h("section", {}, h("h2", {}, "Upload"), h("p", { class: "error", role: "alert" }, err.status === 404 ? "There is no such upload." : `Could not load the upload: ${err.message}`)));
      return;
    }
    if (gone) return;
    const control = can("recording:control");
    const retryButton = control ? h("button", { type: "button", class: "primary", disabled: !item.actions.retry.allowed, title: item.actions.retry.reason ?? "",
      onclick: async () => { retryButton.disabled = true; if (await retry(item)) { notify("Sent back to the queue."); draw(); } } }, "Retry") : null;
    const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "—")];
    fill(view, h("section", { class: "upload-detail" },
      h("div", { class: "title-row" }, h("h2", {}, `${item.recording_name ?? item.recording_id} → ${item.provider_name ?? item.provider_id}`), stateChip(item),
        h("a", { class: "button", href: "#/uploads" }, "All uploads")),
      item.state_reason ? h("p", { class: "hint" }, item.state_reason) : null,
      h("div", { class: "upload-detail-progress" }, progressCell(item)),
      control ? h("div", { class: "button-row" }, retryButton, item.actions.retry.allowed ? null : h("span", { class: "hint" }, item.actions.retry.reason)) : null,
      h("dl", { class: "facts" },
        fact("Recording", h("a", { href: `#/recordings/${encodeURIComponent(item.recording_id)}` }, item.recording_name ?? item.recording_id)),
        fact("Provider", `${item.provider_name ?? item.provider_id}${item.provider_kind ? ` (${item.provider_kind})` : ""}`),
        fact("Policy", item.policy_id ? h("a", { href: `#/offsite/policies/${encodeURIComponent(item.policy_id)}` }, item.policy_id) : "queued by hand"),
        fact("Route", ROUTE_WORDS[item.route] ?? item.route),
        fact("Site", item.site ?? "—"), fact("Node", h("a", { href: `#/nodes/${encodeURIComponent(item.node_id)}` }, item.node_id)),
        fact("Object key", item.remote_key ? h("code", { class: "wrap" }, item.remote_key) : "—"),
        fact("Attempts", String(item.attempts)),
        fact("Last error", item.last_error ? h("span", { class: "upload-error" }, item.last_error) : "—"),
        fact("Next attempt", item.next_attempt_at ? timeEl(item.next_attempt_at) : "—"),
        fact("Verified checksum", item.checksum_sha256 ? h("code", { class: "wrap" }, item.checksum_sha256) : "—"),
        fact("Verified by", item.verified_by ?? "—"),
        fact("Queued", timeEl(item.created_at)), fact("Started", timeEl(item.started_at)), fact("Synced", timeEl(item.synced_at)),
        fact("Changed", timeEl(item.updated_at)))));
    if (item.state !== "synced" && !gone) timer = setTimeout(draw, POLL_MS);
  };
  draw();
  return () => { gone = true; clearTimeout(timer); };
}

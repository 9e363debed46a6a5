// Recordings: the library (filters, facets, selection, bulk metadata and delete, export) and one
// recording (player with a seekable waveform, integrity ledger, metadata editor, download, delete).
import { api, can, follow, listAll, query } from "./api.js";
import { waveform } from "./charts.js";
import { bytes, confirmAction, field, fill, h, notify, seconds, select, show, timeEl } from "./dom.js";
import { plural } from "./words.js";
import { RecordingProgress } from "./recording_progress.js";
import { renderLegalHold } from "./legal_hold.js";
import { renderCopies } from "./recording_copies.js";
import { renderShareLinks } from "./share_links.js";

const STATUSES = ["queued", "recording", "uploading", "completed", "interrupted", "failed", "cancelled"];
const TERMINAL = new Set(["completed", "interrupted", "failed", "cancelled"]);
const PAGE = 50;

let nodeNames = new Map();

async function loadNodeNames() {
  if (!can("node:read")) return;
  try {
    nodeNames = new Map((await listAll("/api/v1/nodes")).map((n) => [n.id, n.name]));
  } catch { /* names are a convenience */ }
}

const nodeName = (id) => nodeNames.get(id) ?? id;

export function renderRecordings(view) {
  const filters = { q: "", node_id: "", site: "", status: "", format: "", interrupted: "", from: "", to: "" };
  const selected = new Set();
  let rows = [];
  let cursor = null;
  const q = h("input", { type: "search", name: "q", placeholder: "name or metadata" });
  const nodeSel = select([["", "Any node"]], "", { name: "node_id" });
  const siteSel = select([["", "Any site"]], "", { name: "site" });
  const statusSel = select([["", "Any status"], ...STATUSES.map((s) => [s, s])], "", { name: "status" });
  const formatSel = select([["", "Any format"], ["wav", "WAV"], ["flac", "FLAC"]], "", { name: "format" });
  const interruptedSel = select([["", "Either"], ["true", "Interrupted"], ["false", "Not interrupted"]], "", { name: "interrupted" });
  const from = h("input", { type: "datetime-local", name: "from" });
  const to = h("input", { type: "datetime-local", name: "to" });
  const error = h("p", { class: "error", role: "alert" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) }, "Load more");
  const facetsBox = h("div", { class: "facets", "aria-label": "Counts by field" });
  const bulkCount = h("span", { role: "status" }, "No recording selected.");
  const bulkKey = h("input", { name: "bulk_key", placeholder: "e.g. project" });
  const bulkValue = h("input", { name: "bulk_value", placeholder: "empty removes the key" });
  const exportLink = h("a", { class: "button", href: "#", download: "recordings.csv" }, "Export CSV");
  const selectAll = h("input", { type: "checkbox", "aria-label": "Select every recording shown" });

  const params = () => {
    const p = {};
    for (const [k, v] of Object.entries(filters)) if (v) p[k] = (k === "from" || k === "to") ? new Date(v).toISOString() : v;
    return p;
  };
  const readFilters = () => {
    Object.assign(filters, { q: q.value.trim(), node_id: nodeSel.value, site: siteSel.value, status: statusSel.value, format: formatSel.value,
      interrupted: interruptedSel.value, from: from.value, to: to.value });
    exportLink.href = `/api/v1/recordings/export${query({ ...params(), format: "csv" })}`;
  };
  const updateBulk = () => {
    bulkCount.textContent = selected.size ? `${selected.size} selected.` : "No recording selected.";
    for (const b of bulkButtons) b.disabled = !selected.size;
    selectAll.checked = rows.length > 0 && rows.every((r) => selected.has(r.id));
  };

  const rowFor = (r) => {
    const box = h("input", { type: "checkbox", checked: selected.has(r.id), "aria-label": `Select ${r.name || r.id}`, onchange: () => {
      if (box.checked) selected.add(r.id); else selected.delete(r.id);
      updateBulk();
    } });
    return h("tr", { dataset: { recordingId: r.id, status: r.status } },
      h("td", {}, box),
      h("td", {}, h("a", { href: `#/recordings/${encodeURIComponent(r.id)}` }, r.name || r.id)),
      h("td", {}, nodeName(r.node_id)), h("td", { class: "col-site" }, r.site ?? "—"), h("td", {}, timeEl(r.started_at ?? r.created_at)),
      h("td", {}, seconds(r.duration_s)), h("td", {}, h("span", { class: `state state-${r.status}` }, r.status), r.interrupted ? " (interrupted)" : ""),
      h("td", { class: "col-size" }, bytes(r.size_bytes)), h("td", { class: "col-meta" }, Object.keys(r.metadata ?? {}).length ? show(r.metadata) : "—"));
  };

  const load = async (append = false) => {
    readFilters();
    try {
      const body = await api("/api/v1/recordings", { params: { ...params(), limit: PAGE, cursor: append ? cursor : null } });
      rows = append ? rows.concat(body.data) : body.data;
      cursor = body.meta.next_cursor;
      more.hidden = !cursor;
      fill(tbody, rows.map(rowFor));
      caption.textContent = rows.length ? (cursor ? `${rows.length}+ recordings` : plural(rows.length, "recording")) : "No recording matches.";
      error.textContent = "";
      updateBulk();
      loadFacets();
    } catch (err) { error.textContent = `Could not load the recordings: ${err.message}`; }
  };

  const loadFacets = async () => {
    try {
      const { data } = await api("/api/v1/recordings/facets", { params: params() });
      setFacetOptions(nodeSel, "Any node", data.node_id, nodeName);
      setFacetOptions(siteSel, "Any site", data.site);
      fill(facetsBox, Object.entries(data).map(([name, values]) => h("div", { class: "facet" }, h("h4", {}, name.replace("_id", "")),
        h("ul", {}, values.map((v) => h("li", {}, h("button", { type: "button", class: "link", onclick: () => {
          const control = { node_id: nodeSel, site: siteSel, status: statusSel, format: formatSel, interrupted: interruptedSel }[name];
          if (!control) return;
          control.value = v.value === null ? "" : String(v.value);
          load();
        } }, `${name === "node_id" ? nodeName(v.value) : show(v.value)}`), ` ${v.count}`))))));
    } catch { /* counts are optional */ }
  };

  const bulkMetadata = h("button", { type: "button", disabled: true, onclick: async () => {
    const key = bulkKey.value.trim();
    if (!key) return notify("Name the metadata key to set.", "error");
    const value = bulkValue.value === "" ? null : parseValue(bulkValue.value);
    const ids = [...selected];
    const what = value === null ? `remove “${key}” from` : `set “${key}” to ${show(value)} on`;
    if (!(await confirmAction("Change metadata?", `This will ${what} ${plural(ids.length, "recording")}.`, "Apply"))) return;
    try {
      const { data } = await api("/api/v1/recordings/bulk-metadata", { method: "POST", body: { ids, metadata: { [key]: value } } });
      reportBulk(data, "updated");
      load();
    } catch (err) { notify(`Could not change the metadata: ${err.message}`, "error"); }
  } }, "Apply to selected");
  const bulkDelete = h("button", { type: "button", class: "danger", disabled: true, onclick: async () => {
    const ids = [...selected];
    if (!(await confirmAction("Delete recordings?", `Delete ${plural(ids.length, "recording")} and their audio files? This cannot be undone.`, "Delete", true))) return;
    try {
      const { data } = await api("/api/v1/recordings/bulk-delete", { method: "POST", body: { ids } });
      for (const r of data) if (r.ok) selected.delete(r.id);
      reportBulk(data, "deleted");
      load();
    } catch (err) { notify(`Could not delete: ${err.message}`, "error"); }
  } }, "Delete selected");
  const bulkButtons = [bulkMetadata, bulkDelete];
  selectAll.addEventListener("change", () => {
    for (const r of rows) if (selectAll.checked) selected.add(r.id); else selected.delete(r.id);
    fill(tbody, rows.map(rowFor));
    updateBulk();
  });

  const filterForm = h("form", { class: "filters", role: "search", "aria-label": "Filter recordings", onsubmit: (e) => { e.preventDefault(); load(); } },
    field("Search", q), field("Node", nodeSel), field("Site", siteSel), field("Status", statusSel), field("Format", formatSel),
    field("Interrupted", interruptedSel), field("From", from), field("To", to), h("button", { type: "submit" }, "Filter"));
  for (const control of [nodeSel, siteSel, statusSel, formatSel, interruptedSel, from, to]) control.addEventListener("change", () => load());

  const bulkBar = [];
  if (can("recording:edit")) bulkBar.push(h("div", { class: "inline-form" }, field("Metadata key", bulkKey), field("Value", bulkValue), bulkMetadata));
  if (can("recording:delete")) bulkBar.push(bulkDelete);
  fill(view, h("section", { class: "recordings" },
    h("div", { class: "title-row" }, h("h2", {}, "Recordings"), exportLink),
    filterForm, error,
    h("div", { class: "library" },
      h("div", {},
        bulkBar.length ? h("div", { class: "bulk", role: "group", "aria-label": "Selected recordings" }, bulkCount, bulkBar) : null,
        h("div", { class: "table-wrap" }, h("table", { class: "recordings-table" }, caption,
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, selectAll), [["Name"], ["Node"], ["Site", "col-site"], ["Started"], ["Length"], ["Status"], ["Size", "col-size"], ["Metadata", "col-meta"]].map(([t, c]) => h("th", { scope: "col", class: c }, t)))),
          tbody)),
        more),
      h("aside", { "aria-label": "Facets" }, h("h3", {}, "Counts"), facetsBox))));

  loadNodeNames().then(() => load());
  // Running recordings change state without events: look again while any is not finished.
  const poll = setInterval(() => { if (rows.some((r) => !TERMINAL.has(r.status))) load(); }, 2000);
  const events = can("node:read") ? follow("/api/v1/events/stream", { "recording.completed": () => load(), "recording.deleted": () => load() }) : null;
  return () => { clearInterval(poll); events?.close(); };
}

function setFacetOptions(selectEl, anyLabel, values = [], label = (v) => v) {
  const current = selectEl.value;
  fill(selectEl, h("option", { value: "" }, anyLabel),
    values.filter((v) => v.value !== null).map((v) => h("option", { value: v.value }, `${label(v.value)} (${v.count})`)));
  selectEl.value = current;
  if (selectEl.value !== current) { selectEl.append(h("option", { value: current }, label(current))); selectEl.value = current; }
}

function reportBulk(results, verb) {
  const failed = results.filter((r) => !r.ok);
  const done = results.length - failed.length;
  if (!failed.length) return notify(`${plural(done, "recording")} ${verb}.`);
  notify(`${done} ${verb}; ${failed.length} not: ${failed.slice(0, 3).map((r) => r.error?.message ?? r.id).join(" ")}`, "error");
}

/** A typed value from a text box: numbers, true/false/null and JSON stay typed; anything else is text. */
export function parseValue(text) {
  const trimmed = text.trim();
  if (/^(-?\d+(\.\d+)?|true|false|null|\{.*\}|\[.*\]|".*")$/s.test(trimmed)) {
    try { return JSON.parse(trimmed); } catch { /* plain text */ }
  }
  return text;
}

const asText = (value) => (typeof value === "string" ? value : JSON.stringify(value));

// -- one recording ---------------------------------------------------------------------------

export function renderRecording(view, recordingId) {
  const path = `/api/v1/recordings/${encodeURIComponent(recordingId)}`;
  const title = h("h2", {}, "Recording");
  const error = h("p", { class: "error", role: "alert" });
  const facts = h("dl", { class: "facts" });
  const player = h("div", { class: "player" });
  const ledger = h("div");
  const metadata = h("div");
  const actions = h("div", { class: "button-row" });
  const hold = h("div");
  const sharing = h("div", { class: "share" });
  const copies = h("div", { class: "copies" });
  let recording = null;
  let peaks = null;
  let stopPlayhead = null;
  let poll = null;
  let live = null; // elapsed time, format and the ledger growing while it records
  const liveSlot = h("div");

  fill(view, h("article", { class: "recording-page" },
    h("p", {}, h("a", { href: "#/recordings" }, "← Recordings")),
    title, error, actions, liveSlot, facts,
    h("section", { "aria-labelledby": "hold-h" }, h("h3", { id: "hold-h" }, "Legal hold"), hold),
    can("recording:share") && h("section", { "aria-labelledby": "share-h" }, h("h3", { id: "share-h" }, "Share"), sharing),
    h("section", { "aria-labelledby": "copies-h" }, h("h3", { id: "copies-h" }, "Where are the copies"), copies),
    h("section", { "aria-labelledby": "play-h" }, h("h3", { id: "play-h" }, "Listen"), player),
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "meta-h" }, h("h3", { id: "meta-h" }, "Metadata"), metadata),
      h("section", { "aria-labelledby": "ledger-h" }, h("h3", { id: "ledger-h" }, "Integrity ledger"), ledger))));

  const load = async () => {
    try {
      recording = (await api(path)).data;
    } catch (err) {
      error.textContent = err.status === 404 ? "This recording does not exist or is outside your sites." : `Could not load the recording: ${err.message}`;
      return;
    }
    title.textContent = recording.name || recording.id;
    fill(facts, ...[
      ["Status", h("span", { class: `state state-${recording.status}`, dataset: { status: recording.status } }, recording.status)],
      ["Node", h("a", { href: `#/nodes/${encodeURIComponent(recording.node_id)}` }, nodeName(recording.node_id))], ["Site", recording.site ?? "—"],
      ["Started", timeEl(recording.started_at)], ["Ended", timeEl(recording.ended_at)], ["Length", seconds(recording.duration_s)],
      ["Format", `${recording.format.toUpperCase()}, ${recording.sample_rate / 1000} kHz, ${recording.channels ?? "?"} ch, ${recording.bit_depth} bit`],
      ["Size", bytes(recording.size_bytes)], ["Clock", recording.time_quality ?? "—"], ["SHA-256", h("code", { class: "wrap" }, recording.sha256 ?? "—")],
      ["Asked by", recording.created_by?.name ?? "—"], ["Error", recording.error ?? "none"],
    ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    renderLedger(ledger, recording.integrity ?? {});
    renderMetadata();
    renderActions();
    renderLegalHold(hold, recording, path, () => load());
    renderShareLinks(sharing, recording, path); // fetches only once the recording is completed (polling has stopped)
    if (TERMINAL.has(recording.status)) renderCopies(copies, path); // where the hub, the providers and the node hold it
    else fill(copies, h("p", { class: "hint" }, "Shown once the recording has ended."));
    if (!TERMINAL.has(recording.status)) {
      fill(player, h("p", { class: "hint", role: "status" }, `The recording is ${recording.status}; it can be played once it is uploaded.`));
      poll ??= setInterval(load, 2000);
      if (!live) fill(liveSlot, (live = new RecordingProgress(recordingId)).el);
      return;
    }
    clearInterval(poll);
    poll = null;
    live?.update(); // it shows the end and stops by itself
    if (!player.querySelector("audio")) renderPlayer();
  };

  const renderActions = () => {
    const a = recording.actions ?? {};
    const buttons = [];
    if (a.download?.allowed) buttons.push(h("button", { type: "button", onclick: async () => {
      try {
        const { data } = await api(`${path}/download`, { method: "POST" });
        const link = h("a", { href: data.url, download: data.filename, hidden: true });
        document.body.append(link);
        link.click();
        link.remove();
      } catch (err) { notify(`Could not download: ${err.message}`, "error"); }
    } }, "Download"));
    if (a.stop?.allowed) buttons.push(h("button", { type: "button", onclick: async () => {
      if (!(await confirmAction("Stop this recording?", "The node stops capturing and uploads what it has.", "Stop"))) return;
      try { await api(`${path}/stop`, { method: "POST" }); load(); } catch (err) { notify(err.message, "error"); }
    } }, "Stop"));
    if (a.delete?.allowed) buttons.push(h("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirmAction("Delete this recording?", "The recording and its audio file are removed. This cannot be undone.", "Delete", true))) return;
      try { await api(path, { method: "DELETE" }); notify("Recording deleted."); location.hash = "#/recordings"; } catch (err) { notify(err.message, "error"); }
    } }, "Delete"));
    else if (recording.legal_hold && can("recording:delete")) {
      const why = h("span", { id: "delete-held", class: "hint" }, "Cannot be deleted: the recording is under legal hold.");
      buttons.push(h("button", { type: "button", class: "danger", disabled: true, "aria-describedby": "delete-held", title: a.delete?.reason ?? "" }, "Delete"), why);
    }
    fill(actions, buttons);
  };

  const renderPlayer = async () => {
    if (!recording.actions?.playback?.allowed) {
      fill(player, h("p", { class: "hint" }, recording.actions?.playback?.reason ?? "Your roles do not include playing recordings."));
      return;
    }
    let info;
    try {
      info = (await api(`${path}/playback`, { method: "POST" })).data;
    } catch (err) {
      fill(player, h("p", { class: "error" }, err.code === "no_file" ? "This recording has no audio file." : `Cannot play: ${err.message}`));
      return;
    }
    const audio = h("audio", { controls: true, preload: "metadata", src: info.url, "aria-label": `Play ${recording.name || recording.id}` });
    const canvas = h("canvas", { class: "waveform", width: 800, height: 120, tabIndex: 0, role: "slider", "aria-label": "Waveform: click or use the arrow keys to seek",
      "aria-valuemin": 0, "aria-valuemax": Math.round(recording.duration_s ?? 0), "aria-valuenow": 0 });
    const duration = () => (Number.isFinite(audio.duration) ? audio.duration : recording.duration_s || 0);
    const draw = () => {
      const progress = duration() ? audio.currentTime / duration() : 0;
      if (peaks) waveform(canvas, peaks, progress);
      canvas.setAttribute("aria-valuenow", Math.round(audio.currentTime));
      canvas.setAttribute("aria-valuetext", `${seconds(audio.currentTime)} of ${seconds(duration())}`);
    };
    canvas.addEventListener("click", (event) => {
      const rect = canvas.getBoundingClientRect();
      audio.currentTime = ((event.clientX - rect.left) / rect.width) * duration();
      draw();
    });
    canvas.addEventListener("keydown", (event) => {
      const step = { ArrowLeft: -5, ArrowRight: 5, PageDown: -30, PageUp: 30 }[event.key];
      if (event.key === "Home") audio.currentTime = 0;
      else if (event.key === "End") audio.currentTime = duration();
      else if (step) audio.currentTime = Math.min(duration(), Math.max(0, audio.currentTime + step));
      else if (event.key === " ") { if (audio.paused) audio.play(); else audio.pause(); }
      else return;
      event.preventDefault();
      draw();
    });
    let frame = null;
    const follow = () => { draw(); frame = requestAnimationFrame(follow); };
    audio.addEventListener("play", () => { cancelAnimationFrame(frame); follow(); });
    audio.addEventListener("pause", () => { cancelAnimationFrame(frame); draw(); });
    audio.addEventListener("ended", () => { cancelAnimationFrame(frame); draw(); });
    audio.addEventListener("seeked", draw);
    audio.addEventListener("error", () => notify("The browser could not play this recording's audio.", "error"));
    stopPlayhead = () => { cancelAnimationFrame(frame); audio.pause(); };
    fill(player, canvas, audio);
    try {
      const buckets = Math.min(2000, Math.max(100, Math.round(canvas.clientWidth || 800)));
      peaks = (await api(info.waveform_url ?? `${path}/waveform`, { params: { buckets } })).data;
      draw();
    } catch (err) {
      player.prepend(h("p", { class: "hint" }, `No waveform: ${err.message}`));
    }
  };

  const renderMetadata = () => {
    const current = recording.metadata ?? {};
    if (!recording.actions?.edit_metadata?.allowed) {
      const entries = Object.entries(current);
      fill(metadata, entries.length ? h("dl", { class: "facts" }, entries.map(([k, v]) => [h("dt", {}, k), h("dd", {}, asText(v))])) : h("p", { class: "hint" }, "No metadata."));
      return;
    }
    const list = h("div", { class: "kv-list" });
    const addRow = (key = "", value = "") => {
      const keyInput = h("input", { value: key, name: "meta_key", "aria-label": "Key", maxLength: 100 });
      const valueInput = h("input", { value, name: "meta_value", "aria-label": `Value${key ? ` of ${key}` : ""}` });
      const row = h("div", { class: "kv" }, keyInput, valueInput,
        h("button", { type: "button", class: "small", "aria-label": `Remove ${key || "this entry"}`, onclick: () => row.remove() }, "Remove"));
      list.append(row);
      return keyInput;
    };
    for (const [k, v] of Object.entries(current)) addRow(k, asText(v));
    const status = h("p", { role: "status" });
    fill(metadata, h("form", { class: "metadata-form", "aria-label": "Edit metadata", onsubmit: async (event) => {
      event.preventDefault();
      const next = {};
      for (const row of list.querySelectorAll(".kv")) {
        const [k, v] = row.querySelectorAll("input");
        if (k.value.trim()) next[k.value.trim()] = parseValue(v.value);
      }
      const patch = { ...next };
      for (const key of Object.keys(current)) if (!(key in next)) patch[key] = null;
      try {
        recording = { ...recording, ...(await api(`${path}/metadata`, { method: "PATCH", body: patch })).data, actions: recording.actions };
        renderMetadata();
        metadata.querySelector("[role=status]").textContent = "Metadata saved.";
      } catch (err) { status.textContent = ""; status.append(h("span", { class: "error" }, `Not saved: ${err.message}`)); }
    } }, list, h("div", { class: "button-row" },
      h("button", { type: "button", onclick: () => addRow().focus() }, "Add entry"), h("button", { type: "submit", class: "primary" }, "Save metadata")), status));
  };

  loadNodeNames().then(load);
  return () => { clearInterval(poll); live?.close(); stopPlayhead?.(); };
}

// Ledger times are ISO strings (shown with their zone); a gap without one is placed by its frame.
const isTime = (v) => typeof v === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(v);
const gapAt = (g) => {
  const at = g.started_at ?? g.at ?? g.start;
  if (isTime(at)) return timeEl(at);
  const frame = g.at_frame ?? g.frame;
  return at ?? (frame !== undefined ? `frame ${frame.toLocaleString()}` : "—");
};

function renderLedger(box, integrity) {
  const entries = Object.entries(integrity).filter(([k]) => k !== "gaps" && k !== "segments");
  const gaps = integrity.gaps ?? [];
  fill(box,
    entries.length ? h("dl", { class: "facts" }, entries.map(([k, v]) => [h("dt", {}, k.replaceAll("_", " ")), h("dd", {}, isTime(v) ? timeEl(v) : show(v))])) : h("p", { class: "hint" }, "No ledger yet."),
    h("h4", {}, gaps.length ? plural(gaps.length, "gap") : "No gaps"),
    gaps.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Kind", "At", "Length", "Details"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, gaps.map((g) => h("tr", {}, h("td", {}, g.kind ?? "—"), h("td", {}, gapAt(g)),
        h("td", {}, g.duration_s !== undefined ? seconds(g.duration_s) : g.frames !== undefined ? plural(g.frames, "frame") : "—"), h("td", {}, show(g)))))) : null,
    integrity.segments ? h("p", { class: "hint" }, `${plural(integrity.segments.length ?? 0, "segment")} in the ledger.`) : null);
}

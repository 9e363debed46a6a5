// Node page: detail, live meters (the last-known levels with their age when the node is away),
// heartbeat metrics, history charts over 1 h to 30 d, recordings in progress, an ad-hoc recording,
// lifecycle actions and their jobs, open health events, interfaces, channel map, credential
// rotation, the node's administration and its live events. Nothing polls or streams until the
// node is found; an unknown node gets a "not found" page and everything stops.
import { api, can, follow } from "./api.js";
import { ago, bytes, confirmAction, field, fill, h, hashParams, notify, pct, secretBox, seconds, select, setHashParams, timeEl, when } from "./dom.js";
import { clockText, nodeWarnings, statusBadge } from "./fleet.js";
import { DEFAULT_RANGE, NodeHistory, RANGES } from "./history_charts.js";
import { listenPanel } from "./listen_panel.js";
import { MeterView } from "./meters.js";
import { renderNodeAdmin } from "./node_admin.js";
import { ACTIVE, RecordingProgress } from "./recording_progress.js";
import { eventDetail, kindTitle, plural } from "./words.js";

const LIFECYCLE = [
  ["identify", "Identify", "Blink the node's front panel so it can be found.", false],
  ["sync-time", "Sync time", "Step the node's clock from its time source now.", false],
  ["collect-diagnostics", "Collect diagnostics", "Gather a diagnostics bundle from the node.", false],
  ["restart-audio", "Restart audio", "Restart audio capture; a running recording gets a gap.", true],
  ["restart-agent", "Restart agent", "Restart the node agent; it reconnects within seconds.", true],
  ["reboot", "Reboot", "Reboot the node's computer; it is offline until it is back.", true],
];
const LIFECYCLE_EXPIRES_S = 3600; // the hub's default expires_in_s, sent explicitly so the warning is exact
const num = (v, digits = 0, unit = "") => (typeof v === "number" && Number.isFinite(v) ? `${v.toFixed(digits)}${unit}` : "—");
const METRIC_CARDS = [
  ["CPU", (m) => pct(m.cpu_pct)],
  ["Memory used", (m) => pct(m.memory?.used_pct)],
  ["Disk used", (m) => pct(m.disk?.used_pct)],
  ["Disk free", (m) => bytes(m.disk?.free_bytes)],
  ["Temperature", (m) => num(m.temperature_c, 1, " °C")],
  ["Outbox backlog", (m) => (m.outbox ? `${m.outbox.depth} of ${m.outbox.capacity}` : "—")],
  ["Clock offset", (m, node) => num(node.clock_offset_ms ?? m.clock?.offset_ms, 1, " ms")],
  ["Load (1 min)", (m) => (Array.isArray(m.load) ? num(m.load[0], 2) : "—")],
  ["Uptime", (m) => seconds(m.uptime_s)],
];
const LIVE = new Set(["online", "degraded"]);
const MAX_FEED = 50;
const EVENT_TYPES = ["node.online", "node.offline", "node.degraded", "node.pending", "node.updated", "health.opened", "health.repeated",
  "health.acknowledged", "health.suppressed", "health.resolved", "health.reopened", "lifecycle.queued", "lifecycle.sent", "lifecycle.running",
  "lifecycle.succeeded", "lifecycle.failed", "lifecycle.expired", "channel_map.assigned", "recording.created", "recording.stopped",
  "recording.completed", "recording.deleted", "recording.job.claimed", "recording.job.recording", "recording.job.uploading",
  "recording.job.failed", "recording.job.cancelled", "recording.job.recovered"];

const rangeOf = (value) => (RANGES.some(([r]) => r === value) ? value : DEFAULT_RANGE);

/** A span whose text is "12 min ago", kept current by the page's age ticker. */
const ageEl = (iso) => h("span", { class: "age", dataset: { since: iso ?? "" } }, ago(iso));

export function renderNode(view, nodeId) {
  const path = `/api/v1/nodes/${encodeURIComponent(nodeId)}`;
  const timers = [];
  const closers = [];
  let stopped = false;
  let started = false;
  let node = null;
  let range = rangeOf(hashParams().get("range"));
  let meters = null;
  let history = null;
  const recordings = new Map(); // id -> RecordingProgress

  const title = h("h2", {}, "Node");
  const statusSlot = h("span");
  const error = h("p", { class: "error", role: "alert" });
  const staleNote = h("div", { class: "stale-note", role: "status" });
  const summary = h("dl", { class: "facts" });
  const boardSlot = h("div");
  const listenSlot = h("div");
  const lastLevels = h("div", { class: "last-levels" });
  const metricCards = h("div", { class: "cards metric-cards" });
  const metricAge = h("p", { class: "hint" });
  const rangePicker = h("div", { class: "range-picker", role: "group", "aria-label": "History range" });
  const historySlot = h("div");
  const activeSlot = h("div", { class: "recordings-live" });
  const interfaces = h("div");
  const channelMap = h("div");
  const health = h("div");
  const lifecycle = h("div");
  const jobs = h("div");
  const recordSlot = h("div");
  const rotateSlot = h("div");
  const adminSlot = h("div", { class: "node-admin-slot" });
  const feed = h("ol", { class: "feed", "aria-live": "polite", "aria-label": "Events of this node, newest first" });

  const page = h("article", { class: "node-page" },
    h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")),
    h("div", { class: "title-row" }, title, statusSlot),
    error, staleNote, summary,
    h("section", { "aria-labelledby": "levels-h" }, h("h3", { id: "levels-h" }, "Live levels"), lastLevels, boardSlot),
    can("listen:monitor") ? h("section", { "aria-labelledby": "listen-h" }, h("h3", { id: "listen-h" }, "Listen live"), listenSlot) : null,
    h("section", { "aria-labelledby": "metrics-h" }, h("h3", { id: "metrics-h" }, "Heartbeat metrics"), metricAge, metricCards),
    h("section", { "aria-labelledby": "history-h", class: "history" },
      h("div", { class: "title-row" }, h("h3", { id: "history-h" }, "History"), rangePicker), historySlot),
    h("section", { "aria-labelledby": "active-h" }, h("h3", { id: "active-h" }, "Recording now"), activeSlot,
      h("p", {}, h("a", { href: `#/schedules/week?node_id=${encodeURIComponent(nodeId)}` }, "Scheduled takes this week"))),
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "record-h" }, h("h3", { id: "record-h" }, "Record now"), recordSlot),
      h("section", { "aria-labelledby": "lifecycle-h" }, h("h3", { id: "lifecycle-h" }, "Lifecycle actions"), lifecycle)),
    h("section", { "aria-labelledby": "jobs-h" }, h("h3", { id: "jobs-h" }, "Lifecycle jobs"), jobs),
    h("section", { "aria-labelledby": "health-h" }, h("h3", { id: "health-h" }, "Open health events"), health),
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "if-h" }, h("h3", { id: "if-h" }, "Audio interfaces"), interfaces),
      h("section", { "aria-labelledby": "cm-h" }, h("h3", { id: "cm-h" }, "Channel map"), channelMap)),
    rotateSlot,
    adminSlot,
    h("section", { "aria-labelledby": "feed-h" }, h("h3", { id: "feed-h" }, "Live events"), feed));

  fill(view, h("article", { class: "node-page loading" }, h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")), h("p", { class: "hint", role: "status" }, "Loading the node…")));

  const stopAll = () => {
    stopped = true;
    timers.forEach(clearInterval);
    closers.forEach((close) => close());
    for (const panel of recordings.values()) panel.close();
    timers.length = 0;
    closers.length = 0;
  };

  const showNotFound = () => {
    stopAll();
    document.title = "Node not found · hark";
    fill(view, h("article", { class: "node-page not-found" },
      h("h2", {}, "Node not found"),
      h("p", {}, `No node has the id “${nodeId}”, or it is outside your sites. It may have been deleted.`),
      h("p", {}, h("a", { href: "#/fleet" }, "← Back to the fleet"))));
  };

  const isAway = () => node && !LIVE.has(node.status);

  const loadNode = async () => {
    if (stopped) return;
    let fresh;
    try {
      fresh = (await api(path)).data;
    } catch (err) {
      if (stopped) return;
      if (err.status === 404) return showNotFound();
      error.textContent = `Could not load the node: ${err.message}`;
      return;
    }
    if (stopped) return;
    node = fresh;
    if (!started) start();
    error.textContent = "";
    title.textContent = node.name;
    document.title = `${node.name} · hark`;
    fill(statusSlot, statusBadge(node.status));
    renderStale();
    renderSummary();
    renderMetrics();
    renderInterfaces();
    renderActions();
    renderAdmin();
    boardSlot.hidden = Boolean(isAway()); // its bars would only say "—": the last levels stand in
    if (isAway()) loadLastLevels(); else fill(lastLevels);
  };

  const renderStale = () => {
    page.classList.toggle("away", Boolean(isAway()));
    if (!isAway()) return fill(staleNote);
    const heard = node.last_seen_at
      ? ["Last heard ", ageEl(node.last_seen_at), " (", timeEl(node.last_seen_at), ")."]
      : ["Never heard from: it has not connected since it was enrolled."];
    fill(staleNote, h("strong", {}, node.status === "pending" ? "Not connected yet. " : "Offline. "), heard,
      node.last_seen_at ? " The levels and metrics below are the last the node sent." : "",
      " Recordings and actions asked for now wait until it reconnects.");
  };

  const renderSummary = () => {
    const m = node.metrics ?? {};
    fill(summary, ...[
      ["Site", node.site ?? "—"], ["Tags", node.tags.join(", ") || "—"],
      ["Last heard", node.last_seen_at ? [ageEl(node.last_seen_at), " (", timeEl(node.last_seen_at), ")"] : "never"],
      ["Connected since", timeEl(node.connected_at)],
      ["Clock", clockText(node)], ["Agent version", node.version ?? "—"],
      ["Audio", m.audio ? `${m.audio.state ?? "—"} (${m.audio.source ?? "—"})` : "—"],
      ["Warnings", nodeWarnings(node).join("; ") || "none"], ["Enrolled", timeEl(node.created_at)], ["Id", node.id],
    ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  };

  const renderMetrics = () => {
    const m = node.metrics ?? {};
    const away = isAway();
    metricCards.classList.toggle("stale", Boolean(away));
    fill(metricAge, m.ts ? [away ? "Last heartbeat, " : "Latest heartbeat, ", ageEl(m.ts), " (", timeEl(m.ts), ")."] : "No heartbeat yet.");
    fill(metricCards, METRIC_CARDS.map(([label, value]) => h("figure", { class: "card" },
      h("figcaption", {}, label), h("strong", { class: "value" }, value(m, node)))));
  };

  const loadLastLevels = async () => {
    let frame;
    try {
      frame = (await api(`${path}/meters`)).data;
    } catch (err) {
      if (stopped) return;
      return fill(lastLevels, h("p", { class: "hint" }, err.status === 404 ? "The hub holds no levels from this node since it started." : `Could not load the last levels: ${err.message}`));
    }
    if (stopped || !isAway()) return;
    const received = new Date(frame.received_at * 1000).toISOString();
    fill(lastLevels, h("div", { class: "stale" },
      h("p", {}, "Last levels received ", ageEl(received), " (", timeEl(received), "):"),
      h("table", { class: "last-levels-table" },
        h("thead", {}, h("tr", {}, ["Channel", "Peak", "RMS"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, frame.channels.map((c) => h("tr", {}, h("td", {}, c.name ?? String(c.index + 1)),
          h("td", {}, num(c.peak_dbfs, 1, " dBFS")), h("td", {}, num(c.rms_dbfs, 1, " dBFS")))))),
      h("p", {}, "Momentary loudness: ", num(frame.loudness?.momentary_lufs, 1, " LUFS"))));
  };

  const renderInterfaces = () => {
    const list = node.interfaces ?? [];
    if (!list.length) return fill(interfaces, h("p", { class: "hint" }, "The node reports no audio interface."));
    fill(interfaces, h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Label", "Channels", "Rates", "Default", "Enabled"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, list.map((i) => h("tr", {}, h("td", {}, i.name), h("td", {}, i.label ?? "—"), h("td", {}, i.channels ?? "—"),
        h("td", {}, (i.rates ?? []).map((r) => `${r / 1000} kHz`).join(", ") || "—"), h("td", {}, i.default ? "yes" : "no"), h("td", {}, i.enabled === false ? "no" : "yes")))))));
  };

  /** What waiting for an away node means, for a confirm dialog; null when the node is connected. */
  const awayWarning = (what) => {
    if (!isAway()) return null;
    const state = node.status === "pending" ? "has not connected yet" : `is offline (last heard ${ago(node.last_seen_at)})`;
    return `${node.name} ${state}: ${what}`;
  };

  const renderActions = () => {
    const allowed = node.actions?.lifecycle;
    if (!allowed?.allowed) {
      fill(lifecycle, h("p", { class: "hint" }, allowed?.reason ?? "Your roles do not include managing this node."));
    } else if (!lifecycle.querySelector(".button-grid")) {
      fill(lifecycle, h("div", { class: "button-grid" }, LIFECYCLE.map(([action, label, explain, danger]) => h("button", {
        type: "button", class: danger ? "danger" : "", title: explain,
        onclick: async () => {
          const expires = new Date(Date.now() + LIFECYCLE_EXPIRES_S * 1000).toISOString();
          const warning = awayWarning(`the job waits until the node reconnects. If it has not reconnected by ${when(expires, { seconds: false })} (1 h from now), the job expires and nothing is done.`);
          const message = warning ? `${explain} ${warning}` : explain;
          if (!(await confirmAction(`${label} ${node.name}?`, message, warning ? `Queue ${label.toLowerCase()}` : label, danger))) return;
          try {
            await api(`${path}/lifecycle/${action}`, { method: "POST", body: { expires_in_s: LIFECYCLE_EXPIRES_S } });
            notify(warning ? `${label}: queued until the node reconnects.` : `${label}: asked the node.`);
            loadJobs();
          } catch (err) { notify(`${label} failed: ${err.message}`, "error"); }
        },
      }, label))));
    }
    const rotate = node.actions?.rotate_credentials;
    if (rotate?.allowed) renderRotate(); else fill(rotateSlot);
  };

  const renderRotate = () => {
    if (rotateSlot.childElementCount) return;
    const grace = h("input", { type: "number", min: 0, max: 604800, value: 300, name: "grace_s" });
    const deliver = h("input", { type: "checkbox", checked: true, name: "deliver", id: "rotate-deliver" });
    const result = h("div");
    fill(rotateSlot, h("section", { "aria-labelledby": "rotate-h" }, h("h3", { id: "rotate-h" }, "Node credential"),
      h("form", { class: "inline-form", onsubmit: async (event) => {
        event.preventDefault();
        const grace_s = Number(grace.value) || 0;
        if (!(await confirmAction("Rotate the credential?", `A new credential is issued; the old one stops ${grace_s > 0 ? `after ${plural(grace_s, "second")}` : "at once"}.`, "Rotate", true))) return;
        try {
          const { data } = await api(`${path}/credentials/rotate`, { method: "POST", body: { grace_s, deliver: deliver.checked } });
          fill(result, secretBox("New node credential", data.credential));
        } catch (err) { fill(result, h("p", { class: "error", role: "alert" }, err.message)); }
      } },
      field("Old credential keeps working for (seconds)", grace),
      h("div", { class: "field checkbox" }, deliver, h("label", { for: deliver.id }, "Send the new credential to the node")),
      h("button", { type: "submit", class: "danger" }, "Rotate credential")), result));
  };

  const renderAdmin = () => {
    try {
      renderNodeAdmin(adminSlot, node, { reload: loadNode });
    } catch (err) {
      console.error(err);
      fill(adminSlot, h("p", { class: "error" }, `Could not show the node's administration: ${err.message}`));
    }
  };

  const loadJobs = async () => {
    try {
      const { data } = await api(`${path}/lifecycle-jobs`, { params: { limit: 20 } });
      if (stopped) return;
      if (!data.length) return fill(jobs, h("p", { class: "hint" }, "No lifecycle jobs yet."));
      const waiting = (job) => job.state === "queued" || job.state === "sent";
      fill(jobs, h("div", { class: "table-wrap" }, h("table", { class: "jobs-table" },
        h("thead", {}, h("tr", {}, ["Action", "State", "Asked", "By", "Expires", "Finished", "Result"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, data.map((job) => h("tr", { dataset: { jobId: job.id, state: job.state } },
          h("td", {}, job.action), h("td", {}, h("span", { class: `state state-${job.state}` }, job.state)),
          h("td", {}, timeEl(job.created_at)), h("td", {}, job.created_by?.name ?? "—"),
          h("td", { class: "expires" }, waiting(job) ? timeEl(job.expires_at, { seconds: false }) : job.state === "expired" ? ["expired ", timeEl(job.expires_at, { seconds: false })] : "—"),
          h("td", {}, timeEl(job.finished_at)),
          h("td", {}, job.error ?? (job.exit_code !== null ? `exit ${job.exit_code}` : "—"),
            job.output ? h("details", {}, h("summary", {}, "output"), h("pre", {}, job.output.slice(-4000))) : null)))))));
    } catch (err) { if (!stopped) fill(jobs, h("p", { class: "error" }, `Could not load the jobs: ${err.message}`)); }
  };

  const loadHealth = async () => {
    if (!can("health:read")) return fill(health, h("p", { class: "hint" }, "Your roles do not include reading health events."));
    try {
      const { data } = await api("/api/v1/health-events", { params: { node_id: nodeId, state: ["open", "acknowledged"], limit: 50 } });
      if (stopped) return;
      if (!data.length) return fill(health, h("p", { class: "hint" }, "No open health events."));
      fill(health, h("ul", { class: "health-list" }, data.map((e) => {
        const detail = eventDetail(e);
        return h("li", { class: `sev-${e.severity}`, dataset: { kind: e.kind } },
          h("strong", { title: e.kind }, kindTitle(e.kind)), ` — ${e.severity}, ${e.state}, seen ${plural(e.count ?? 1, "time")} since `, timeEl(e.first_seen),
          detail ? h("span", { class: "hint" }, ` · ${detail}`) : null,
          e.state === "open" && can("health:acknowledge") ? h("button", { type: "button", class: "small", onclick: async () => {
            try { await api(`/api/v1/health-events/${e.id}/acknowledge`, { method: "POST", body: {} }); loadHealth(); } catch (err) { notify(err.message, "error"); }
          } }, "Acknowledge") : null);
      })));
    } catch (err) { if (!stopped) fill(health, h("p", { class: "error" }, `Could not load health events: ${err.message}`)); }
  };

  const loadChannelMap = async () => {
    if (!can("settings:read")) return fill(channelMap, h("p", { class: "hint" }, "Your roles do not include reading settings."));
    try {
      const { data } = await api(`/api/v1/settings/channel-map-assignments/${encodeURIComponent(nodeId)}`);
      if (stopped) return;
      const current = data.template_id ? `${data.template_name} (version ${data.template_version})` : "none: the node's default map";
      const parts = [h("p", {}, "Template: ", h("strong", {}, current),
        data.assigned_at ? [" — since ", timeEl(data.assigned_at), data.assigned_by?.name ? ` by ${data.assigned_by.name}` : ""] : "")];
      if (can("settings:manage")) {
        const templates = await api("/api/v1/settings/channel-map-templates", { params: { limit: 200 } });
        const choice = select([["", "Node default (no template)"], ...templates.data.map((t) => [t.id, `${t.name} (v${t.version})`])], data.template_id ?? "");
        parts.push(h("form", { class: "inline-form", onsubmit: async (event) => {
          event.preventDefault();
          try {
            if (choice.value) await api(`/api/v1/settings/channel-map-assignments/${encodeURIComponent(nodeId)}`, { method: "PUT", body: { template_id: choice.value } });
            else await api(`/api/v1/settings/channel-map-assignments/${encodeURIComponent(nodeId)}`, { method: "DELETE" });
            notify("Channel map assigned.");
            loadChannelMap();
          } catch (err) { notify(`Could not assign the channel map: ${err.message}`, "error"); }
        } }, field("Assign a template", choice), h("button", { type: "submit" }, "Assign")));
      }
      fill(channelMap, parts);
    } catch (err) { if (!stopped) fill(channelMap, h("p", { class: "error" }, `Could not load the channel map: ${err.message}`)); }
  };

  // -- history ------------------------------------------------------------------------------

  const renderRangePicker = () => {
    fill(rangePicker, RANGES.map(([value, label]) => h("button", {
      type: "button", class: "small", "aria-pressed": String(value === range), dataset: { range: value },
      onclick: () => {
        if (value === range) return;
        range = value;
        setHashParams({ range: value === DEFAULT_RANGE ? "" : value });
        renderRangePicker();
        loadHistory();
      },
    }, label)));
  };

  let historyTimer = null;
  const loadHistory = async () => {
    clearTimeout(historyTimer);
    if (stopped) return;
    await history.load(range);
    if (stopped) return;
    historyTimer = setTimeout(loadHistory, range === "1h" || range === "24h" ? 30000 : 300000);
  };

  // -- recordings in progress -----------------------------------------------------------------

  const loadActive = async () => {
    if (!can("recording:read")) return fill(activeSlot, h("p", { class: "hint" }, "Your roles do not include reading recordings."));
    let rows;
    try {
      rows = (await api("/api/v1/recordings", { params: { node_id: nodeId, status: [...ACTIVE], limit: 5 } })).data;
    } catch (err) {
      if (!stopped) fill(activeSlot, h("p", { class: "error" }, `Could not load the recordings in progress: ${err.message}`));
      return;
    }
    if (stopped) return;
    const ids = new Set(rows.map((r) => r.id));
    for (const [id, panel] of recordings) {
      if (!ids.has(id) && !panel.recording?.status) { panel.close(); recordings.delete(id); }
      else if (!ids.has(id) && !ACTIVE.has(panel.recording.status)) { panel.close(); recordings.delete(id); }
    }
    for (const r of rows) {
      if (recordings.has(r.id)) continue;
      const heading = h("h4", {}, h("a", { href: `#/recordings/${encodeURIComponent(r.id)}` }, r.name || r.id));
      recordings.set(r.id, new RecordingProgress(r.id, { title: heading, onEnd: () => setTimeout(loadActive, 5000) }));
    }
    if (!recordings.size) return fill(activeSlot, h("p", { class: "hint" }, "Nothing is recording on this node."));
    fill(activeSlot, [...recordings.values()].map((panel) => panel.el));
  };

  const renderRecord = () => {
    if (!can("recording:create")) return fill(recordSlot, h("p", { class: "hint" }, "Your roles do not include starting recordings."));
    const name = h("input", { name: "name", maxLength: 200, placeholder: "optional" });
    const duration = h("input", { name: "duration_s", type: "number", min: 1, max: 86400, step: 1, value: 60, required: true });
    const result = h("p", { role: "status" });
    fill(recordSlot, h("form", { class: "inline-form", "aria-label": "Start a recording", onsubmit: async (event) => {
      event.preventDefault();
      const button = event.submitter;
      const warning = awayWarning("the recording waits in the queue until the node reconnects and takes it. Recording jobs do not expire: it starts whenever that is, unless you stop it from its page first.");
      if (warning && !(await confirmAction(`Queue a recording on ${node.name}?`, warning, "Queue recording"))) return;
      button.disabled = true;
      try {
        const body = { node_id: nodeId, duration_s: Number(duration.value) };
        if (name.value.trim()) body.name = name.value.trim();
        const { data } = await api("/api/v1/recordings", { method: "POST", body });
        fill(result, warning ? "Recording queued until the node reconnects: " : "Recording queued: ",
          h("a", { href: `#/recordings/${encodeURIComponent(data.recording.id)}` }, data.recording.name || data.recording.id), ".");
        loadActive();
      } catch (err) {
        fill(result, h("span", { class: "error" }, `Could not start the recording: ${err.message}`));
      } finally { button.disabled = false; }
    } }, field("Name", name), field("Length (seconds)", duration), h("button", { type: "submit", class: "primary" }, "Start recording"), result));
  };

  // -- live events ----------------------------------------------------------------------------

  const addEvent = (data) => {
    if (data.node_id !== nodeId) return;
    const text = data.type === "node.updated" ? `changed ${(data.changed ?? []).join(", ")}`
      : data.type.startsWith("node.") ? `${data.from ?? "—"} → ${data.to}${data.reason ? ` (${data.reason})` : ""}`
      : data.type.startsWith("health.") ? `${data.kind ? kindTitle(data.kind) : ""} ${data.severity ?? ""}`.trim()
      : data.type.startsWith("lifecycle.") ? `${data.action ?? ""} ${data.state ?? ""}`.trim()
      : data.type.startsWith("recording.job.") ? `job of ${recordings.get(data.recording_id)?.recording?.name ?? `recording ${data.recording_id ?? ""}`}${data.error ? `: ${data.error}` : ""}`
      : data.type.startsWith("recording.") ? `${data.name || data.id || ""}${data.status ? ` (${data.status})` : ""}`
      : "";
    feed.prepend(h("li", {}, timeEl(data.at ?? data.emitted_at), " ", h("strong", {}, data.type), " ", text));
    while (feed.childElementCount > MAX_FEED) feed.lastChild.remove();
    if (data.type.startsWith("lifecycle.")) loadJobs();
    if (data.type.startsWith("health.")) loadHealth();
    if (data.type.startsWith("node.")) loadNode();
    // A recording that starts or ends here (from a schedule or another user too) shows at once.
    if (data.type.startsWith("recording.") && !(data.type.startsWith("recording.job.") && data.recording_id && recordings.has(data.recording_id))) loadActive();
  };

  const tickAges = () => {
    for (const el of view.querySelectorAll(".node-page .age[data-since]")) {
      const text = ago(el.dataset.since || null);
      if (el.textContent !== text) el.textContent = text;
    }
  };

  // Everything that polls or streams starts here, once the node is known to exist.
  const start = () => {
    started = true;
    fill(view, page);
    meters = new MeterView([nodeId]);
    closers.push(() => meters.close());
    fill(boardSlot, meters.board(nodeId, { large: true, label: "" }).el);
    if (can("listen:monitor")) {
      const listen = listenPanel(nodeId);
      closers.push(() => listen.close());
      fill(listenSlot, listen.el);
    }
    history = new NodeHistory(api, nodeId);
    closers.push(() => { clearTimeout(historyTimer); history.destroy(); });
    fill(historySlot, history.el);
    renderRangePicker();
    // Each time the stream is (re)connected, read the node again: a change between the first read and
    // the subscription (or during a reconnect) would otherwise wait for the next poll.
    const events = follow("/api/v1/events/stream", Object.fromEntries(EVENT_TYPES.map((t) => [t, addEvent])), {
      onState: (state) => { if (state === "live") loadNode(); },
    });
    closers.push(() => events.close());
    loadJobs();
    loadHealth();
    loadChannelMap();
    loadHistory();
    loadActive();
    renderRecord();
    timers.push(setInterval(tickAges, 5000), setInterval(loadActive, 15000));
  };

  loadNode();
  timers.push(setInterval(loadNode, 10000));
  return stopAll;
}

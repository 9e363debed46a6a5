// Node page: detail, live meters, heartbeat metrics with sparklines, interfaces, channel map,
// open health events, lifecycle actions and their jobs, an ad-hoc recording, credential rotation
// and the node's live events.
import { api, can, follow } from "./api.js";
import { sparkline } from "./charts.js";
import { ago, bytes, confirmAction, field, fill, h, notify, pct, secretBox, seconds, select, show, when } from "./dom.js";
import { clockText, nodeWarnings, statusBadge } from "./fleet.js";
import { MeterView } from "./meters.js";

const LIFECYCLE = [
  ["identify", "Identify", "Blink the node's front panel so it can be found.", false],
  ["sync-time", "Sync time", "Step the node's clock from its time source now.", false],
  ["collect-diagnostics", "Collect diagnostics", "Gather a diagnostics bundle from the node.", false],
  ["restart-audio", "Restart audio", "Restart audio capture; a running recording gets a gap.", true],
  ["restart-agent", "Restart agent", "Restart the node agent; it reconnects within seconds.", true],
  ["reboot", "Reboot", "Reboot the node's computer; it is offline until it is back.", true],
];
const HEARTBEAT_SERIES = [
  ["cpu", "CPU", (m) => m.cpu_pct, pct],
  ["memory", "Memory", (m) => m.memory?.used_pct, pct],
  ["disk", "Disk used", (m) => m.disk?.used_pct, pct],
  ["temperature", "Temperature", (m) => m.temperature_c, (v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)} °C`)],
];
const MAX_FEED = 50;

export function renderNode(view, nodeId) {
  const timers = [];
  const closers = [];
  const samples = Object.fromEntries(HEARTBEAT_SERIES.map(([key]) => [key, []]));
  let node = null;

  const title = h("h2", {}, "Node");
  const statusSlot = h("span");
  const error = h("p", { class: "error", role: "alert" });
  const summary = h("dl", { class: "facts" });
  const meters = new MeterView([nodeId]);
  closers.push(() => meters.close());
  const board = meters.board(nodeId, { large: true, label: "" });
  const metricCards = h("div", { class: "cards" });
  const levelCards = h("div", { class: "cards" });
  const interfaces = h("div");
  const channelMap = h("div");
  const health = h("div");
  const lifecycle = h("div");
  const jobs = h("div");
  const recordSlot = h("div");
  const rotateSlot = h("div");
  const feed = h("ol", { class: "feed", "aria-live": "polite", "aria-label": "Events of this node, newest first" });

  fill(view, h("article", { class: "node-page" },
    h("p", {}, h("a", { href: "#/fleet" }, "← Fleet")),
    h("div", { class: "title-row" }, title, statusSlot),
    error,
    summary,
    h("section", { "aria-labelledby": "levels-h" }, h("h3", { id: "levels-h" }, "Live levels"), board.el),
    h("section", { "aria-labelledby": "metrics-h" }, h("h3", { id: "metrics-h" }, "Heartbeat metrics"),
      h("p", { class: "hint" }, "Latest heartbeat; the lines follow it while this page is open."), metricCards),
    h("section", { "aria-labelledby": "history-h" }, h("h3", { id: "history-h" }, "Levels, last hour"), levelCards),
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "record-h" }, h("h3", { id: "record-h" }, "Record now"), recordSlot),
      h("section", { "aria-labelledby": "lifecycle-h" }, h("h3", { id: "lifecycle-h" }, "Lifecycle actions"), lifecycle)),
    h("section", { "aria-labelledby": "jobs-h" }, h("h3", { id: "jobs-h" }, "Lifecycle jobs"), jobs),
    h("section", { "aria-labelledby": "health-h" }, h("h3", { id: "health-h" }, "Open health events"), health),
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "if-h" }, h("h3", { id: "if-h" }, "Audio interfaces"), interfaces),
      h("section", { "aria-labelledby": "cm-h" }, h("h3", { id: "cm-h" }, "Channel map"), channelMap)),
    rotateSlot,
    h("section", { "aria-labelledby": "feed-h" }, h("h3", { id: "feed-h" }, "Live events"), feed)));

  const loadNode = async () => {
    try {
      node = (await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}`)).data;
    } catch (err) {
      error.textContent = err.status === 404 ? "This node does not exist or is outside your sites." : `Could not load the node: ${err.message}`;
      return;
    }
    error.textContent = "";
    title.textContent = node.name;
    document.title = `${node.name} · hark`;
    fill(statusSlot, statusBadge(node.status));
    const m = node.metrics ?? {};
    const warnings = nodeWarnings(node);
    fill(summary, ...[
      ["Site", node.site ?? "—"], ["Tags", node.tags.join(", ") || "—"], ["Last seen", `${ago(node.last_seen_at)} (${when(node.last_seen_at)})`],
      ["Clock", clockText(node)], ["Agent version", node.version ?? "—"], ["Uptime", seconds(m.uptime_s)],
      ["Outbox", m.outbox ? `${m.outbox.depth} of ${m.outbox.capacity}` : "—"], ["Load", m.load ? m.load.join(" / ") : "—"],
      ["Disk free", bytes(m.disk?.free_bytes)], ["Audio", m.audio ? `${m.audio.state ?? "—"} (${m.audio.source ?? "—"})` : "—"],
      ["Warnings", warnings.join("; ") || "none"], ["Id", node.id],
    ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    if (m.ts && samples.cpu.at(-1)?.ts !== m.ts) {
      for (const [key, , pick] of HEARTBEAT_SERIES) samples[key].push({ ts: m.ts, value: pick(m) ?? null });
      for (const key of Object.keys(samples)) if (samples[key].length > 360) samples[key].shift();
    }
    fill(metricCards, HEARTBEAT_SERIES.map(([key, label, pick, format]) => {
      const canvas = h("canvas", { class: "spark", width: 160, height: 36, role: "img", "aria-label": `${label} trend` });
      const card = h("figure", { class: "card" }, h("figcaption", {}, label, " ", h("strong", {}, format(pick(m)))), canvas);
      requestAnimationFrame(() => sparkline(canvas, samples[key].map((s) => s.value), key === "temperature" ? {} : { min: 0, max: 100 }));
      return card;
    }));
    renderInterfaces();
    renderActions();
  };

  const renderInterfaces = () => {
    const list = node.interfaces ?? [];
    if (!list.length) return fill(interfaces, h("p", { class: "hint" }, "The node reports no audio interface."));
    fill(interfaces, h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Label", "Channels", "Rates", "Default", "Enabled"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, list.map((i) => h("tr", {}, h("td", {}, i.name), h("td", {}, i.label ?? "—"), h("td", {}, i.channels ?? "—"),
        h("td", {}, (i.rates ?? []).map((r) => `${r / 1000} kHz`).join(", ") || "—"), h("td", {}, i.default ? "yes" : "no"), h("td", {}, i.enabled === false ? "no" : "yes"))))));
  };

  const renderActions = () => {
    const allowed = node.actions?.lifecycle;
    if (!allowed?.allowed) {
      fill(lifecycle, h("p", { class: "hint" }, allowed?.reason ?? "Your roles do not include managing this node."));
    } else {
      fill(lifecycle, h("div", { class: "button-grid" }, LIFECYCLE.map(([action, label, explain, danger]) => h("button", {
        type: "button", class: danger ? "danger" : "", title: explain,
        onclick: async () => {
          if (!(await confirmAction(`${label} ${node.name}?`, explain, label, danger))) return;
          try {
            await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}/lifecycle/${action}`, { method: "POST", body: {} });
            notify(`${label}: asked the node.`);
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
    const deliver = h("input", { type: "checkbox", checked: true, name: "deliver" });
    const result = h("div");
    fill(rotateSlot, h("section", { "aria-labelledby": "rotate-h" }, h("h3", { id: "rotate-h" }, "Node credential"),
      h("form", { class: "inline-form", onsubmit: async (event) => {
        event.preventDefault();
        if (!(await confirmAction("Rotate the credential?", `A new credential is issued; the old one stops ${Number(grace.value) > 0 ? `after ${grace.value} s` : "at once"}.`, "Rotate", true))) return;
        try {
          const { data } = await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}/credentials/rotate`, { method: "POST", body: { grace_s: Number(grace.value) || 0, deliver: deliver.checked } });
          fill(result, secretBox("New node credential", data.credential));
        } catch (err) { fill(result, h("p", { class: "error", role: "alert" }, err.message)); }
      } },
      field("Old credential keeps working for (seconds)", grace),
      h("div", { class: "field checkbox" }, deliver, h("label", { for: deliver.id || (deliver.id = "rotate-deliver") }, "Send the new credential to the node")),
      h("button", { type: "submit", class: "danger" }, "Rotate credential")), result));
  };

  const loadJobs = async () => {
    try {
      const { data } = await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}/lifecycle-jobs`, { params: { limit: 20 } });
      if (!data.length) return fill(jobs, h("p", { class: "hint" }, "No lifecycle jobs yet."));
      fill(jobs, h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Action", "State", "Asked", "By", "Finished", "Result"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, data.map((job) => h("tr", {}, h("td", {}, job.action), h("td", {}, h("span", { class: `state state-${job.state}` }, job.state)),
          h("td", {}, when(job.created_at)), h("td", {}, job.created_by?.name ?? "—"), h("td", {}, when(job.finished_at)),
          h("td", {}, job.error ?? (job.exit_code !== null ? `exit ${job.exit_code}` : "—"),
            job.output ? h("details", {}, h("summary", {}, "output"), h("pre", {}, job.output.slice(-4000))) : null)))))));
    } catch (err) { fill(jobs, h("p", { class: "error" }, `Could not load the jobs: ${err.message}`)); }
  };

  const loadHealth = async () => {
    if (!can("health:read")) return fill(health, h("p", { class: "hint" }, "Your roles do not include reading health events."));
    try {
      const { data } = await api("/api/v1/health-events", { params: { node_id: nodeId, state: ["open", "acknowledged"], limit: 50 } });
      if (!data.length) return fill(health, h("p", { class: "hint" }, "No open health events."));
      fill(health, h("ul", { class: "health-list" }, data.map((e) => h("li", { class: `sev-${e.severity}` },
        h("strong", {}, e.kind), ` — ${e.severity}, ${e.state}, seen ${e.count}× since ${when(e.first_seen)}`,
        Object.keys(e.details ?? {}).length ? h("small", { class: "hint" }, ` ${show(e.details)}`) : null,
        e.state === "open" && can("health:acknowledge") ? h("button", { type: "button", class: "small", onclick: async () => {
          try { await api(`/api/v1/health-events/${e.id}/acknowledge`, { method: "POST", body: {} }); loadHealth(); } catch (err) { notify(err.message, "error"); }
        } }, "Acknowledge") : null))));
    } catch (err) { fill(health, h("p", { class: "error" }, `Could not load health events: ${err.message}`)); }
  };

  const loadChannelMap = async () => {
    if (!can("settings:read")) return fill(channelMap, h("p", { class: "hint" }, "Your roles do not include reading settings."));
    try {
      const { data } = await api(`/api/v1/settings/channel-map-assignments/${encodeURIComponent(nodeId)}`);
      const current = data.template_id ? `${data.template_name} (version ${data.template_version})` : "none: the node's default map";
      const parts = [h("p", {}, "Template: ", h("strong", {}, current), data.assigned_at ? ` — since ${when(data.assigned_at)}${data.assigned_by?.name ? ` by ${data.assigned_by.name}` : ""}` : "")];
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
    } catch (err) { fill(channelMap, h("p", { class: "error" }, `Could not load the channel map: ${err.message}`)); }
  };

  const loadHistory = async () => {
    try {
      const { data } = await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}/meters/history`, { params: { range: "1h" } });
      const points = data.points;
      const maxOf = (p, key) => {
        const values = p.channels.map((c) => c[key]).filter((v) => v !== null && v !== undefined);
        return values.length ? Math.max(...values) : null;
      };
      const series = [
        ["Peak (dBFS)", points.map((p) => maxOf(p, "peak_dbfs")), { min: -60, max: 0 }],
        ["RMS (dBFS)", points.map((p) => maxOf(p, "rms_dbfs")), { min: -60, max: 0 }],
        ["Momentary loudness (LUFS)", points.map((p) => p.momentary_lufs), { min: -60, max: 0 }],
      ];
      fill(levelCards, series.map(([label, values, range]) => {
        const canvas = h("canvas", { class: "spark wide", width: 320, height: 40, role: "img", "aria-label": `${label} over the last hour` });
        const last = values.filter((v) => v !== null).at(-1);
        requestAnimationFrame(() => sparkline(canvas, values, range));
        return h("figure", { class: "card" }, h("figcaption", {}, label, " ", h("strong", {}, last === undefined ? "—" : last.toFixed(1))), canvas);
      }));
    } catch (err) { fill(levelCards, h("p", { class: "error" }, `Could not load the level history: ${err.message}`)); }
  };

  const renderRecord = () => {
    if (!can("recording:create")) return fill(recordSlot, h("p", { class: "hint" }, "Your roles do not include starting recordings."));
    const name = h("input", { name: "name", maxLength: 200, placeholder: "optional" });
    const duration = h("input", { name: "duration_s", type: "number", min: 1, max: 86400, step: 1, value: 60, required: true });
    const result = h("p", { role: "status" });
    fill(recordSlot, h("form", { class: "inline-form", "aria-label": "Start a recording", onsubmit: async (event) => {
      event.preventDefault();
      const button = event.submitter;
      button.disabled = true;
      try {
        const body = { node_id: nodeId, duration_s: Number(duration.value) };
        if (name.value.trim()) body.name = name.value.trim();
        const { data } = await api("/api/v1/recordings", { method: "POST", body });
        fill(result, "Recording queued: ", h("a", { href: `#/recordings/${encodeURIComponent(data.recording.id)}` }, data.recording.name || data.recording.id), ".");
      } catch (err) {
        fill(result, h("span", { class: "error" }, `Could not start the recording: ${err.message}`));
      } finally { button.disabled = false; }
    } }, field("Name", name), field("Length (seconds)", duration), h("button", { type: "submit", class: "primary" }, "Start recording"), result));
  };

  const addEvent = (data) => {
    if (data.node_id !== nodeId) return;
    const text = data.type === "node.updated" ? `changed ${(data.changed ?? []).join(", ")}`
      : data.type.startsWith("node.") ? `${data.from ?? "—"} → ${data.to}${data.reason ? ` (${data.reason})` : ""}`
      : data.type.startsWith("health.") ? `${data.kind ?? ""} ${data.severity ?? ""}`.trim()
      : data.type.startsWith("lifecycle.") ? `${data.action ?? ""} ${data.state ?? ""}`.trim()
      : data.type.startsWith("recording.") ? `${data.name || data.id}${data.status ? ` (${data.status})` : ""}`
      : "";
    feed.prepend(h("li", {}, h("time", { datetime: data.at ?? data.emitted_at }, when(data.at ?? data.emitted_at)), " ", h("strong", {}, data.type), " ", text));
    while (feed.childElementCount > MAX_FEED) feed.lastChild.remove();
    if (data.type.startsWith("lifecycle.")) loadJobs();
    if (data.type.startsWith("health.")) loadHealth();
    if (data.type.startsWith("node.")) loadNode();
  };
  const types = ["node.online", "node.offline", "node.degraded", "node.pending", "node.updated", "health.opened", "health.repeated", "health.acknowledged",
    "health.suppressed", "health.resolved", "health.reopened", "lifecycle.queued", "lifecycle.sent", "lifecycle.running", "lifecycle.succeeded",
    "lifecycle.failed", "lifecycle.expired", "channel_map.assigned", "recording.completed", "recording.deleted"];
  const events = follow("/api/v1/events/stream", Object.fromEntries(types.map((t) => [t, addEvent])));
  closers.push(() => events.close());

  loadNode().then(() => { loadJobs(); });
  loadHealth();
  loadChannelMap();
  loadHistory();
  renderRecord();
  timers.push(setInterval(loadNode, 10000), setInterval(loadHistory, 30000));
  return () => { timers.forEach(clearInterval); closers.forEach((close) => close()); };
}

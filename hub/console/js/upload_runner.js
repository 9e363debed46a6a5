// The upload runner's panel (issue 20), shown above the upload queue: its state, throughput over the last
// minute, the backlog and its ETA, the uploads in flight with their progress, and Run now / Pause / Resume
// for those who may. It refreshes itself every few seconds until stopped.
import { api, can } from "./api.js";
import { bytes, fill, h, notify, seconds, timeEl } from "./dom.js";
import { plural } from "./words.js";

const RUNNER = "/api/v1/upload-runner";
const REFRESH_MS = 3000;
const STATE_CLASS = { running: "state-uploading", paused: "state-failed", idle: "" };
const STATE_WORDS = { running: "uploading", paused: "paused", idle: "idle" };

function rate(bps) {
  return bps ? `${bytes(bps)}/s` : "—";
}

function eta(status) {
  if (status.eta_s === null || status.eta_s === undefined) return status.backlog.count ? "unknown (nothing moving)" : "—";
  return status.eta_s === 0 ? "nothing left" : seconds(status.eta_s);
}

function figure(label, value, attrs = {}) {
  return h("figure", { class: "card", ...attrs }, h("figcaption", {}, label), h("strong", {}, value));
}

function activeRow(upload) {
  const done = upload.bytes_total ? upload.bytes_sent / upload.bytes_total : 0;
  const label = `${Math.round(done * 100)} %`;
  const recording = upload.recording_name || upload.recording_id;
  const provider = upload.provider_name || upload.provider_id;
  return h("li", { class: "runner-upload", dataset: { item: upload.item_id } },
    h("a", { href: `#/uploads/${encodeURIComponent(upload.item_id)}` }, recording),
    " → ", provider, " ",
    h("progress", { max: 1, value: done, "aria-label": `${recording} to ${provider}: ${label}` }),
    h("span", { class: "hint" }, ` ${bytes(upload.bytes_sent)} of ${bytes(upload.bytes_total)} at ${rate(upload.rate_bps)}`));
}

/** The panel: {element, stop}. `stop()` ends its refreshing (call it when the page goes away). */
export function runnerPanel() {
  const control = can("recording:control");
  const figures = h("div", { class: "cards runner-figures" });
  const active = h("ul", { class: "runner-active", "aria-label": "Uploads in flight" });
  const error = h("p", { class: "error", role: "alert", hidden: true });
  const passInfo = h("p", { class: "hint runner-pass" });
  const buttons = {};
  let timer = null;
  let stopped = false;

  const act = (name, label, path, done) => {
    const button = h("button", { type: "button", class: name === "run" ? "primary" : null, disabled: true, dataset: { action: name },
      onclick: async () => {
        button.disabled = true;
        try {
          await api(`${RUNNER}/${path}`, { method: "POST" });
          notify(done);
        } catch (err) {
          notify(`${label}: ${err.message}`, "error");
        }
        refresh();
      } }, label);
    buttons[name] = button;
    return button;
  };
  const tools = control ? h("div", { class: "button-row runner-actions" },
    act("run", "Run now", "run", "The runner looked at the queue."),
    act("pause", "Pause", "pause", "Uploads paused; those in flight went back to the queue."),
    act("resume", "Resume", "resume", "Uploads resumed.")) : null;

  const element = h("section", { class: "upload-runner", "aria-label": "Upload runner" },
    h("h3", {}, "Runner"), figures, tools, passInfo, active, error);

  function draw(status, actions) {
    fill(figures,
      figure("State", h("span", { class: `state ${STATE_CLASS[status.state] ?? ""}` }, STATE_WORDS[status.state] ?? status.state), { dataset: { field: "state" } }),
      figure("Throughput (last minute)", rate(status.throughput_bps), { dataset: { field: "throughput" } }),
      figure("Backlog", `${plural(status.backlog.count, "upload")}, ${bytes(status.backlog.bytes)}`, { dataset: { field: "backlog" } }),
      figure("ETA", eta(status), { dataset: { field: "eta" } }),
      figure("Uploads at once", String(status.concurrency), { dataset: { field: "concurrency" } }));
    fill(active, status.active.length ? status.active.map(activeRow) : h("li", { class: "hint" }, "No upload in flight."));
    fill(passInfo, status.last_pass_at ? ["Last looked at the queue ", timeEl(status.last_pass_at), "."] : "The runner has not looked at the queue yet.");
    for (const [name, button] of Object.entries(buttons)) {
      const state = actions?.[name];
      button.disabled = !state?.allowed;
      button.title = state?.allowed ? "" : state?.reason ?? "";
      button.hidden = (name === "pause" && status.state === "paused") || (name === "resume" && status.state !== "paused");
    }
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [status, actions] = await Promise.all([api(RUNNER), control ? api(`${RUNNER}/actions`) : Promise.resolve(null)]);
      if (stopped) return;
      error.hidden = true;
      draw(status.data, actions?.data);
    } catch (err) {
      if (stopped) return;
      error.hidden = false;
      error.textContent = `Could not read the runner's status: ${err.message}`;
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  refresh();
  return { element, stop: () => { stopped = true; clearTimeout(timer); } };
}

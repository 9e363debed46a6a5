// "Listen sessions": the caller's own live listens, and for listen:manage holders everyone's active
// ones (active or disconnected, within the caller's sites) with a Disconnect button that asks why.
import { api, can } from "./api.js";
import { bytes, fill, h, notify, timeEl } from "./dom.js";

const REFRESH_MS = 5000;
const END_WORDS = {
  client_gone: "client gone", disconnected: "disconnected", ended: "ended by the listener",
  node_offline: "node offline", node_stopped: "node stopped", hub_stopped: "hub stopped",
};

const format = (s) => `${s.codec}${s.codec === "opus" && s.bitrate ? ` ${Math.round(s.bitrate / 1000)} kbit/s` : ""}, ${s.sample_rate / 1000} kHz`;
const channels = (s) => (s.programme ? `programme ${s.programme}` : `channel ${(s.channels ?? []).map((c) => c + 1).join(" + ")}`);
const rate = (s) => (s.bytes_per_s ? `${(s.bytes_per_s / 1000).toFixed(1)} kB/s` : "—");
const who = (s) => s.user?.name ?? s.actor?.name ?? "—";

/** Ask for the reason of a disconnect; resolves to the reason, or null when cancelled. */
function askReason(session) {
  return new Promise((resolve) => {
    const reason = h("textarea", { id: "disconnect-reason", name: "reason", required: true, maxLength: 500, rows: 3 });
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "disconnect-title" });
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    const cancel = h("button", { type: "button", onclick: () => done(null) }, "Cancel");
    fill(dialog, h("form", { method: "dialog", onsubmit: (event) => {
      event.preventDefault();
      if (reason.value.trim()) done(reason.value.trim());
    } },
    h("h2", { id: "disconnect-title" }, `Disconnect ${who(session)}?`),
    h("p", {}, `${who(session)} stops hearing ${session.node_name ?? session.node_id} at once. The reason is kept in the audit log.`),
    h("div", { class: "field" }, h("label", { for: reason.id }, "Reason"), reason),
    h("div", { class: "buttons" }, cancel, h("button", { type: "submit", class: "danger" }, "Disconnect"))));
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(null); });
    document.body.append(dialog);
    dialog.showModal();
    reason.focus();
  });
}

function table(rows, { manage, onDisconnect, label }) {
  const heads = ["Listener", "Node", "Listening to", "Format", "State", "Started", "Sent", "Rate", ...(manage ? ["Actions"] : [])];
  return h("div", { class: "table-wrap" }, h("table", { class: "listen-sessions-table", "aria-label": label },
    h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((s) => h("tr", { dataset: { sessionId: s.id, state: s.state } },
      h("td", {}, who(s), s.client_address ? h("small", { class: "hint" }, ` ${s.client_address}`) : ""),
      h("td", {}, h("a", { href: `#/nodes/${encodeURIComponent(s.node_id)}` }, s.node_name ?? s.node_id)),
      h("td", {}, channels(s)),
      h("td", {}, format(s)),
      h("td", {}, h("span", { class: `state state-${s.state}` }, s.state),
        s.end_reason ? h("small", { class: "hint" }, ` ${END_WORDS[s.end_reason] ?? s.end_reason}`) : ""),
      h("td", {}, timeEl(s.started_at)),
      h("td", {}, bytes(s.bytes_sent)),
      h("td", {}, rate(s)),
      manage ? h("td", { class: "actions" }, s.state !== "terminated"
        ? h("button", { type: "button", class: "danger small", "aria-label": `Disconnect ${who(s)} from ${s.node_name ?? s.node_id}`, onclick: () => onDisconnect(s) }, "Disconnect")
        : "") : null)))));
}

export function renderListenSessions(view) {
  const manage = can("listen:manage");
  let timer = null;
  let stopped = false;
  const error = h("p", { class: "error", role: "alert" });
  const mine = h("div");
  const everyone = h("div");

  const disconnect = async (session) => {
    const reason = await askReason(session);
    if (reason === null) return;
    try {
      await api(`/api/v1/listen-sessions/${encodeURIComponent(session.id)}/disconnect`, { method: "POST", body: { reason } });
      notify(`${who(session)} was disconnected.`);
    } catch (err) {
      notify(`Could not disconnect: ${err.message}`, "error");
    }
    load();
  };

  const load = async () => {
    clearTimeout(timer);
    if (stopped) return;
    try {
      const own = await api("/api/v1/listen-sessions", { params: { mine: "true", limit: 50 } });
      if (stopped) return;
      fill(mine, own.data.length ? table(own.data, { manage: false, label: "My listen sessions" })
        : h("p", { class: "hint" }, "You have not listened to any node yet: a node's page has a Listen panel."));
      if (manage) {
        const active = await api("/api/v1/listen-sessions/active", { params: { limit: 200 } });
        if (stopped) return;
        fill(everyone, active.data.length ? table(active.data, { manage: true, onDisconnect: disconnect, label: "Active listen sessions" })
          : h("p", { class: "hint" }, "Nobody is listening now."));
      }
      error.textContent = "";
    } catch (err) {
      if (!stopped) error.textContent = `Could not load the listen sessions: ${err.message}`;
    }
    timer = setTimeout(load, REFRESH_MS);
  };

  fill(view, h("article", { class: "listen-sessions" },
    h("h2", {}, "Listen sessions"), error,
    manage ? h("section", { "aria-labelledby": "listen-active-h" }, h("h3", { id: "listen-active-h" }, "Listening now (everyone)"), everyone) : null,
    h("section", { "aria-labelledby": "listen-mine-h" }, h("h3", { id: "listen-mine-h" }, "My sessions"), mine)));
  load();
  return () => { stopped = true; clearTimeout(timer); };
}

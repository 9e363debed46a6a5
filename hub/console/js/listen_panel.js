// The node page's Listen panel: choose channels (or a mapped programme) and a codec, listen live,
// see the level of what plays, the measured delay, gaps, kB/s, and who else listens to this node.
import { api, can } from "./api.js";
import { fill, field, h, select } from "./dom.js";
import { ListenPlayer } from "./listen_player.js";

const FLOOR_DB = -60;
const OTHERS_EVERY_MS = 10000;
const END_WORDS = {
  disconnected: "an administrator disconnected this session",
  node_offline: "the node went offline",
  node_stopped: "the node stopped the stream",
  ended: "the session was ended",
  hub_stopped: "the hub stopped",
  client_gone: "the connection was gone for too long",
};
const STATE_WORDS = { idle: "Not listening.", starting: "Starting…", playing: "Listening live.", reconnecting: "Connection lost: reconnecting…", stopped: "Stopped." };

const num = (v, digits = 0) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : "—");

/** The choices of what to hear: each channel, each adjacent pair, and the programmes of one or two channels. */
async function sources(nodeId) {
  const choices = [];
  let channels = [];
  try {
    channels = (await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}/meters`)).data.channels ?? [];
  } catch { /* no levels yet: the first channel */ }
  if (!channels.length) channels = [{ index: 0, name: null }];
  const label = (c) => c.name ?? `Channel ${c.index + 1}`;
  if (channels.length >= 2) choices.push([JSON.stringify({ channels: [0, 1] }), `${label(channels[0])} + ${label(channels[1])} (stereo)`]);
  for (const c of channels) choices.push([JSON.stringify({ channels: [c.index] }), label(c)]);
  for (let i = 2; i + 1 < channels.length; i += 2) {
    choices.push([JSON.stringify({ channels: [i, i + 1] }), `${label(channels[i])} + ${label(channels[i + 1])} (stereo)`]);
  }
  if (can("settings:read")) {
    try {
      const assignment = (await api(`/api/v1/settings/channel-map-assignments/${encodeURIComponent(nodeId)}`)).data;
      if (assignment.template_id) {
        const template = (await api(`/api/v1/settings/channel-map-templates/${encodeURIComponent(assignment.template_id)}`)).data;
        for (const p of template.programmes ?? []) {
          if (p.channels?.length >= 1 && p.channels.length <= 2) choices.push([JSON.stringify({ programme: p.name }), `Programme ${p.name}`]);
        }
      }
    } catch { /* channels only */ }
  }
  return choices;
}

/** The panel for one node; `close()` stops listening (and ends the session) and the polling. */
export function listenPanel(nodeId) {
  let player = null;
  let closed = false;
  let othersTimer = null;
  const source = select([], "", { name: "source" });
  const codec = select([["opus", "Opus (64 kbit/s)"], ["pcm16", "PCM 16 bit (LAN)"]], "opus", { name: "codec" });
  const listen = h("button", { type: "submit", class: "primary" }, "Listen");
  const stop = h("button", { type: "button", hidden: true, onclick: () => player?.stop() }, "Stop");
  const status = h("p", { class: "listen-status", role: "status" }, STATE_WORDS.idle);
  const bar = h("div", { class: "bar rms" });
  const level = h("div", { class: "track listen-level", role: "meter", "aria-label": "Level of what plays (dBFS)", "aria-valuemin": FLOOR_DB, "aria-valuemax": 0, "aria-valuenow": FLOOR_DB }, bar);
  const levelText = h("span", { class: "value" }, "—");
  const figures = {
    delay: h("dd", { class: "listen-delay" }, "—"), gaps: h("dd", { class: "listen-gaps" }, "—"),
    rate: h("dd", { class: "listen-rate" }, "—"), underruns: h("dd", { class: "listen-underruns" }, "—"),
  };
  const others = h("div", { class: "listen-others" });

  const show = (stats) => {
    const live = ["starting", "playing", "reconnecting"].includes(stats.state);
    listen.hidden = live;
    stop.hidden = !live;
    source.disabled = codec.disabled = live;
    let words = STATE_WORDS[stats.state] ?? "";
    if (stats.state === "ended") words = `Ended: ${END_WORDS[stats.end_reason] ?? stats.end_reason}.`;
    if (stats.state === "failed") words = `Could not listen: ${stats.error}`;
    if (status.textContent !== words) status.textContent = words;
    status.dataset.state = stats.state;
    const db = stats.state === "playing" && stats.level_dbfs !== null ? Math.max(FLOOR_DB, stats.level_dbfs) : FLOOR_DB;
    bar.style.clipPath = `inset(0 ${(100 * db / FLOOR_DB).toFixed(1)}% 0 0)`;
    level.setAttribute("aria-valuenow", db.toFixed(0));
    levelText.textContent = stats.state === "playing" && stats.level_dbfs !== null ? `${num(stats.level_dbfs, 1)} dBFS` : "—";
    figures.delay.textContent = stats.delay_ms === null ? "—" : `${num(stats.delay_ms)} ms`;
    figures.gaps.textContent = stats.gaps ? `${stats.gaps} (${stats.lost_frames} frames lost)` : String(stats.gaps);
    figures.rate.textContent = `${num(stats.bytes_per_s / 1000, 1)} kB/s`;
    figures.underruns.textContent = String(stats.underruns);
  };

  const ended = async (stats) => {
    if (stats.end_reason !== "disconnected" || !stats.session_id) return;
    try {
      const { data } = await api(`/api/v1/listen-sessions/${encodeURIComponent(stats.session_id)}`);
      const by = data.ended_by;
      if (by && !closed) status.textContent = `Ended: ${by.name ?? "an administrator"} disconnected this session${by.reason ? ` (${by.reason})` : ""}.`;
    } catch { /* the short words stay */ }
  };

  const loadOthers = async () => {
    clearTimeout(othersTimer);
    if (closed) return;
    try {
      const { data } = await api(`/api/v1/nodes/${encodeURIComponent(nodeId)}/listen`);
      const mine = player?.stats.session_id;
      const rows = data.filter((s) => s.id !== mine);
      fill(others, rows.length
        ? h("ul", { class: "listen-others-list", "aria-label": "Also listening" }, rows.map((s) => h("li", {},
          h("strong", {}, s.user?.name ?? s.actor?.name ?? "a key"), ` — ${s.codec}, channels ${(s.channels ?? []).map((c) => c + 1).join(" + ")}`,
          s.programme ? ` (${s.programme})` : "", ", ", h("span", { class: `state state-${s.state}` }, s.state))))
        : h("p", { class: "hint" }, "Nobody else is listening to this node."));
    } catch (err) {
      fill(others, h("p", { class: "hint" }, `Who else listens is unknown: ${err.message}`));
    }
    othersTimer = setTimeout(loadOthers, OTHERS_EVERY_MS);
  };

  const form = h("form", { class: "inline-form listen-form", "aria-label": "Listen live", onsubmit: (event) => {
    event.preventDefault();
    if (!source.value) return;
    const request = { ...JSON.parse(source.value), codec: codec.value };
    player = new ListenPlayer(nodeId, { onChange: (stats) => {
      if (closed) return;
      show(stats);
      if (stats.state === "ended" && !stats.explained) { stats.explained = true; ended(stats); }
    } });
    // start() makes the AudioContext before it waits for anything: this click allows it to play.
    player.start(request).then(loadOthers, () => {});
  } }, field("Listen to", source), field("Quality", codec), listen, stop);

  const el = h("div", { class: "listen-panel" }, form,
    h("div", { class: "listen-meter" }, level, levelText), status,
    h("dl", { class: "facts listen-figures" },
      h("dt", {}, "Delay (capture to playback)"), figures.delay, h("dt", {}, "Gaps"), figures.gaps,
      h("dt", {}, "Received"), figures.rate, h("dt", {}, "Underruns"), figures.underruns),
    h("h4", {}, "Also listening"), others);

  sources(nodeId).then((choices) => {
    if (closed) return;
    fill(source, choices.map(([v, label]) => h("option", { value: v }, label)));
  });
  loadOthers();

  return {
    el,
    close() {
      closed = true;
      clearTimeout(othersTimer);
      player?.stop();
    },
  };
}

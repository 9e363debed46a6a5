// The fleet page's status header, from GET /api/v1/status: recordings of the last 24 h, the upload
// backlog, the hub's storage and the hours it lasts at the current recording rate, the nodes' disks,
// and the broker's and database's state. Built once; each refresh only changes text that changed.
import { bytes, fill, h } from "./dom.js";
import { plural } from "./words.js";

const RECORDING_ORDER = ["recording", "uploading", "queued", "completed", "interrupted", "failed", "cancelled"];

/** Hours in words: "45 min", "5.5 h", "3 days". */
export function hoursText(hours) {
  if (hours === null || hours === undefined) return "—";
  if (hours < 1) return `${Math.max(1, Math.round(hours * 60))} min`;
  if (hours < 48) return `${hours < 10 ? hours.toFixed(1) : Math.round(hours)} h`;
  return plural(Math.round(hours / 24), "day");
}

/** How urgent `hours` of storage left is: "bad" under the critical mark, "warn" under the warning one. */
export function hoursLevel(hours, warning = 24, critical = 2) {
  if (hours === null || hours === undefined) return "";
  return hours < critical ? "bad" : hours < warning ? "warn" : "ok";
}

const uptimeText = (s) => (s < 5400 ? `${Math.max(1, Math.round(s / 60))} min` : s < 172800 ? `${Math.round(s / 3600)} h` : plural(Math.round(s / 86400), "day"));

export function statusHeader() {
  const facts = new Map();
  const fact = (key, label) => {
    const value = h("strong", { class: "value" });
    const sub = h("span", { class: "sub" });
    const el = h("div", { class: "status-fact", dataset: { fact: key } }, h("span", { class: "label" }, label), value, sub);
    facts.set(key, { el, value, sub });
    return el;
  };
  const el = h("div", { class: "fleet-status", role: "group", "aria-label": "Fleet status" },
    fact("recordings", "Recordings, last 24 h"),
    fact("backlog", "Upload backlog"),
    fact("hub-storage", "Hub storage"),
    fact("node-storage", "Node disks"),
    fact("broker", "Broker"),
    fact("database", "Database"),
    fact("hub", "Hub"));

  const set = (key, value, sub = "", level = "") => {
    const f = facts.get(key);
    if (f.value.textContent !== value) f.value.textContent = value;
    if (f.sub.textContent !== sub) f.sub.textContent = sub;
    const cls = `status-fact${level ? ` level-${level}` : ""}`;
    if (f.el.className !== cls) f.el.className = cls;
  };
  const chip = (key, ok, good, badWord, sub) => {
    const f = facts.get(key);
    const word = ok ? good : badWord;
    if (f.value.textContent !== word) fill(f.value, h("span", { class: `chip chip-${ok ? "ok" : "bad"}` }, word));
    if (f.sub.textContent !== sub) f.sub.textContent = sub;
    f.el.className = `status-fact${ok ? "" : " level-bad"}`;
  };

  const show = (s) => {
    const rec = s.recordings;
    if (rec) {
      const parts = RECORDING_ORDER.filter((k) => rec.by_status[k]).map((k) => `${rec.by_status[k]} ${k}`);
      set("recordings", String(rec.total), parts.join(" · ") || "none started", rec.by_status.failed ? "warn" : "");
    } else set("recordings", "—", "database not reachable");

    const backlog = s.upload_backlog;
    if (backlog) {
      const left = backlog.bytes_known_for ? `${bytes(backlog.bytes)} left` : "";
      const partly = backlog.bytes_known_for && backlog.bytes_known_for < backlog.count ? ` (size known for ${backlog.bytes_known_for})` : "";
      set("backlog", backlog.count ? plural(backlog.count, "recording") : "none", backlog.count ? `${left}${partly}` || "uploading" : "nothing waiting to upload");
    } else set("backlog", "—");

    const hub = s.storage.hub;
    const rate = hub.recordings_in_progress
      ? `${hoursText(hub.hours_left)} left at the current rate (${plural(hub.recordings_in_progress, "recording")}, ${bytes(hub.recording_bytes_per_s)}/s)`
      : "nothing recording now";
    set("hub-storage", hub.full ? "full" : `${bytes(hub.free_bytes)} free`, hub.full ? "writes are refused until there is room" : rate,
      hub.full ? "bad" : hoursLevel(hub.hours_left));

    const nodes = s.storage.nodes;
    if (nodes && nodes.recording) {
      const lowest = nodes.nodes.find((n) => n.hours_left !== null);
      const under = nodes.under_warning ? `${plural(nodes.under_warning, "node")} under ${nodes.warning_hours} h` : `all over ${nodes.warning_hours} h`;
      set("node-storage", `lowest ${hoursText(nodes.lowest_hours_left)} left`, `${lowest ? `${lowest.name}; ` : ""}${under}`,
        hoursLevel(nodes.lowest_hours_left, nodes.warning_hours, nodes.critical_hours));
    } else set("node-storage", "no node recording", nodes ? "hours left show while nodes record" : "");

    chip("broker", s.broker.connected, "connected", "disconnected", s.broker.kind);
    chip("database", s.database.reachable, "reachable", "not reachable", s.database.kind);
    set("hub", `hark ${s.hub.version}`, `up ${uptimeText(s.hub.uptime_s)}`);
  };

  const failed = (message) => set("hub", "—", `status not loaded: ${message}`, "bad");
  return { el, show, failed };
}

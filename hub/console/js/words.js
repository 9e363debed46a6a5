// Words for what the hub reports: plurals, health event kinds as titles, their details as a sentence.
import { when } from "./dom.js";

/** "1 node", "3 nodes"; `many` when the plural is not the word plus "s". */
export function plural(n, one, many = `${one}s`) {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

export const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };
export const STATUS_RANK = { offline: 0, degraded: 1, pending: 2, online: 3 };

const num = (v, digits = 0) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(digits) : null);
const mib = (b) => (typeof b === "number" ? `${(b / 1048576).toLocaleString(undefined, { maximumFractionDigits: 0 })} MiB` : null);
const gb = (b) => (typeof b === "number" ? `${(b / 1e9).toLocaleString(undefined, { maximumFractionDigits: 1 })} GB` : null);
const channelsOf = (d) => {
  const chans = d.channels ?? (d.channel !== undefined ? [d.channel] : null);
  return Array.isArray(chans) && chans.length ? ` on channel${chans.length === 1 ? "" : "s"} ${chans.map((c) => (typeof c === "number" ? c + 1 : c)).join(", ")}` : "";
};

const batteryLeft = (d) => [num(d.percent) && `${num(d.percent)} % left`, num(d.minutes_left) && `about ${num(d.minutes_left)} min`]
  .filter(Boolean).join(", ") || null;
// audio.clipping: {clipped_samples: {channel name: clipped samples in the frame}}
const clipped = (d) => {
  const counts = d.clipped_samples && typeof d.clipped_samples === "object" ? Object.entries(d.clipped_samples) : [];
  if (!counts.length) return "the input is clipping";
  const total = counts.reduce((sum, [, n]) => sum + (Number(n) || 0), 0);
  return `the input is clipping on channel${counts.length === 1 ? "" : "s"} ${counts.map(([name]) => name).join(", ")} (${plural(total, "clipped sample")} in one frame)`;
};

// kind -> [title, detail(details) -> sentence or null]
const KINDS = {
  "disk.low": ["Disk almost full", (d) => [num(d.free_pct, 1) && `${num(d.free_pct, 1)} % free`, gb(d.free_bytes) && `(${gb(d.free_bytes)})`].filter(Boolean).join(" ")],
  "temperature.high": ["Running hot", (d) => num(d.temperature_c, 1) && `the board is at ${num(d.temperature_c, 1)} °C`],
  "clock.unsynced": ["Clock not synchronised", (d) => [d.quality && `time source: ${d.quality}`, num(d.offset_ms) && `offset ${d.offset_ms >= 0 ? "+" : ""}${num(d.offset_ms)} ms`].filter(Boolean).join(", ")],
  "power.under_voltage": ["Power supply too weak", (d) => (Array.isArray(d.flags) && d.flags.length ? d.flags.join(", ").replaceAll("_", " ") : null)],
  "power.on_battery": ["Running on battery", (d) => batteryLeft(d)],
  "power.battery_low": ["Battery low", (d) => { const left = batteryLeft(d); return left && `${left}: recordings are being closed`; }],
  "outbox.high": ["Telemetry backlog growing", (d) => num(d.depth) && `${Number(d.depth).toLocaleString()}${num(d.capacity) ? ` of ${Number(d.capacity).toLocaleString()}` : ""} messages waiting to be sent to the hub`],
  "outbox.damaged": ["Telemetry outbox was damaged", (d) => d.moved_to && `set aside as ${d.moved_to}; a fresh one is in use`],
  "audio.silence": ["Silence", (d) => `no signal${channelsOf(d)}${num(d.threshold_dbfs) ? ` below ${num(d.threshold_dbfs)} dBFS` : ""}${num(d.hold_s) ? ` for over ${num(d.hold_s)} s` : ""}`],
  "audio.clipping": ["Clipping", (d) => clipped(d)],
  "audio.device_lost": ["Audio interface lost", (d) => (d.source || d.message) && `${d.source ?? "the input"} stopped delivering audio${d.message ? ` (${d.message})` : ""}; the node keeps retrying`],
  "audio.no_device": ["No audio interface", (d) => (d.source || d.message) && `${d.source ?? "the input"} could not be opened${d.message ? ` (${d.message})` : ""}; the node keeps retrying`],
  "audio.channel_map": ["Channel map refused", (d) => d.message ?? null],
  "recording.cache_full": ["Recording cache full", (d) => `no new recording starts${mib(d.free_bytes) ? ` (${mib(d.free_bytes)} free on the node)` : ""}`
    + (Array.isArray(d.reasons) && d.reasons.length ? `: ${d.reasons.join("; ")}` : "")],
  "hub.storage_full": ["Hub data disk full", (d) => `${d.path ?? "the hub's data directory"} has ${mib(d.free_bytes) ?? "no room"} free; `
    + `changes and uploads are refused${mib(d.recover_above_bytes) ? ` until ${mib(d.recover_above_bytes)} are free` : ""}`],
  "heartbeat.missed": ["Not heard from", (d) => d.last_seen_at && `last heartbeat ${when(d.last_seen_at)}${num(d.interval_s) ? ` (expected every ${num(d.interval_s)} s)` : ""}`],
  "panel.button": ["Front panel button pressed", (d) => d.button && `the ${d.button} button`],
};

/** A readable title for a health event kind ("disk.low" -> "Disk almost full"). */
export function kindTitle(kind) {
  if (KINDS[kind]) return KINDS[kind][0];
  const words = String(kind).replace(/[._]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** An event's details as a short sentence (known kinds), else its fields as "name: value" pairs. */
export function eventDetail(event) {
  const details = event.details && typeof event.details === "object" ? event.details : {};
  const known = KINDS[event.kind]?.[1];
  let text = null;
  try { text = known ? known(details) : null; } catch { text = null; }
  if (text) return text;
  return Object.entries(details)
    .filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${k.replaceAll("_", " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
}

/** Events worst first, then newest first. */
export function worstFirst(events) {
  return [...events].sort((a, b) => (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9)
    || String(b.last_seen ?? b.first_seen).localeCompare(String(a.last_seen ?? a.first_seen)));
}

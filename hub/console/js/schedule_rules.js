// Schedules in words, without the page: the recurrence presets and their RRULEs (both ways), a
// schedule's "when" and targets as a phrase, occurrence states, and local wall time in an IANA zone
// to and from UTC (the browser has no zone arithmetic beyond Intl, so it is done with its offsets).
import { h, when } from "./dom.js";
import { plural } from "./words.js";

export const SCHEDULES = "/api/v1/schedules";
export const scheduleUrl = (id) => `${SCHEDULES}/${encodeURIComponent(id)}`;

export const DAYS = [["MO", "Mon"], ["TU", "Tue"], ["WE", "Wed"], ["TH", "Thu"], ["FR", "Fri"], ["SA", "Sat"], ["SU", "Sun"]];
const WEEKDAYS = "MO,TU,WE,TH,FR";
export const PRESETS = [
  ["once", "Once"], ["daily", "Every day"], ["weekdays", "Weekdays (Mon–Fri)"], ["weekly", "Weekly on chosen days"],
  ["hourly", "Every N hours"], ["minutely", "Every N minutes"], ["custom", "Custom RRULE"],
];
export const SOLAR_EVENTS = [
  ["sunrise", "sunrise"], ["sunset", "sunset"], ["dawn_civil", "civil dawn"], ["dusk_civil", "civil dusk"],
  ["dawn_nautical", "nautical dawn"], ["dusk_nautical", "nautical dusk"],
];
export const CONFLICT_WORDS = {
  reject: "Refuse to save when a node would record two takes at once",
  skip: "Skip a clashing take on that node",
  allow: "Record both (the node runs two recorders)",
};
export const STATE_WORDS = {
  planned: "planned", skipped: "skipped", withdrawn: "withdrawn", dispatched: "dispatched", recording: "recording",
  completed: "completed", missed: "missed", failed: "failed",
};

export const stateChip = (state) => h("span", { class: `state schedule-state-${state}`, dataset: { state } }, STATE_WORDS[state] ?? state);

/** An RRULE's parts as an object of upper-case names ("FREQ=WEEKLY;BYDAY=MO" -> {FREQ: "WEEKLY", BYDAY: "MO"}). */
export function ruleParts(rrule) {
  const parts = {};
  for (const item of String(rrule ?? "").replace(/^RRULE:/i, "").split(";")) {
    const at = item.indexOf("=");
    if (at > 0) parts[item.slice(0, at).trim().toUpperCase()] = item.slice(at + 1).trim().toUpperCase();
  }
  return parts;
}

// A solar schedule without a rule records every day (the hub's default), so "once" is a one-day rule.
const SOLAR_ONCE = "FREQ=DAILY;COUNT=1";

/**
 * The preset an RRULE is ({preset, days, every}), or {preset: "custom"} when none says it exactly.
 * `solar`: the rule picks the days of a solar anchor (no rule: every day; one day: once).
 */
export function presetOf(rrule, solar = false) {
  if (!rrule) return { preset: solar ? "daily" : "once" };
  const p = ruleParts(rrule);
  if (solar && p.FREQ === "DAILY" && p.COUNT === "1" && Object.keys(p).length === 2) return { preset: "once" };
  const keys = Object.keys(p).sort().join(",");
  const every = Number(p.INTERVAL ?? 1);
  if (p.FREQ === "DAILY" && keys === "FREQ") return { preset: "daily" };
  if (p.FREQ === "WEEKLY" && keys === "BYDAY,FREQ") {
    const days = p.BYDAY.split(",");
    if (!days.every((d) => DAYS.some(([code]) => code === d))) return { preset: "custom" };
    const ordered = DAYS.map(([code]) => code).filter((d) => days.includes(d));
    return ordered.join(",") === WEEKDAYS ? { preset: "weekdays" } : { preset: "weekly", days: ordered };
  }
  if ((p.FREQ === "HOURLY" || p.FREQ === "MINUTELY") && (keys === "FREQ" || keys === "FREQ,INTERVAL") && Number.isInteger(every) && every > 0) {
    return { preset: p.FREQ === "HOURLY" ? "hourly" : "minutely", every };
  }
  return { preset: "custom" };
}

/** The RRULE of a preset (null: once; undefined for custom, whose text is the user's). */
export function ruleOf({ preset, days = [], every = 1 }, solar = false) {
  switch (preset) {
    case "once": return solar ? SOLAR_ONCE : null;
    case "daily": return "FREQ=DAILY";
    case "weekdays": return `FREQ=WEEKLY;BYDAY=${WEEKDAYS}`;
    case "weekly": return `FREQ=WEEKLY;BYDAY=${(days.length ? days : ["MO"]).join(",")}`;
    case "hourly": return every > 1 ? `FREQ=HOURLY;INTERVAL=${every}` : "FREQ=HOURLY";
    case "minutely": return every > 1 ? `FREQ=MINUTELY;INTERVAL=${every}` : "FREQ=MINUTELY";
    default: return undefined;
  }
}

/** Seconds as a short length ("2 h 30 min", "45 min", "90 s"). */
export function lengthWords(s) {
  if (!Number.isFinite(s)) return "—";
  const d = Math.floor(s / 86400);
  const hrs = Math.floor((s % 86400) / 3600);
  const min = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const parts = [d && `${d} d`, hrs && `${hrs} h`, min && `${min} min`, sec && `${sec} s`].filter(Boolean);
  return parts.join(" ") || "0 s";
}

const dayNames = (codes) => codes.map((c) => DAYS.find(([code]) => code === c)?.[1] ?? c).join(", ");

/** A schedule's "when" as a phrase: "Weekdays at 09:00 for 1 h", "30 min before sunrise, every day, for 2 h". */
export function whenWords(s) {
  const clock = String(s.start_local ?? "").slice(11, 16);
  const { preset, days, every } = presetOf(s.rrule, Boolean(s.solar));
  const repeat = {
    once: s.solar ? `once, on ${String(s.start_local).slice(0, 10)}` : `once, ${String(s.start_local).slice(0, 10)}`,
    daily: "every day", weekdays: "weekdays", weekly: `weekly on ${dayNames(days ?? [])}`,
    hourly: `every ${plural(every ?? 1, "hour")}`, minutely: `every ${every ?? 1} min`, custom: `by the rule ${s.rrule}`,
  }[preset];
  const length = `for ${lengthWords(s.duration_s)}`;
  if (s.solar) {
    const event = SOLAR_EVENTS.find(([v]) => v === s.solar.event)?.[1] ?? s.solar.event;
    const offset = Number(s.solar.offset_minutes || 0);
    const at = offset === 0 ? `At ${event}` : `${Math.abs(offset)} min ${offset < 0 ? "before" : "after"} ${event}`;
    return `${at}, ${repeat}, ${length}`;
  }
  if (preset === "once") return `Once at ${clock} on ${String(s.start_local).slice(0, 10)}, ${length}`;
  if (preset === "hourly" || preset === "minutely") return `${repeat[0].toUpperCase()}${repeat.slice(1)} from ${clock}, ${length}`;
  if (preset === "custom") return `From ${String(s.start_local).replace("T", " ").slice(0, 16)} ${repeat}, ${length}`;
  return `${repeat[0].toUpperCase()}${repeat.slice(1)} at ${clock}, ${length}`;
}

/** A target in words; `names`: node id -> name. */
export function targetWords(target, names = new Map()) {
  if (target?.node_ids) return target.node_ids.length ? target.node_ids.map((id) => names.get(id) ?? id).join(", ") : "no node";
  const sel = target?.selector ?? {};
  const where = sel.site ? `every node on ${sel.site}` : "every node";
  return sel.tags?.length ? `${where} tagged ${sel.tags.join(" and ")}` : where;
}

/** The ids of the nodes (from a node list) a target names now: a node list, or a site and all of the tags. */
export function matchedNodes(target, nodes) {
  if (target?.node_ids) return nodes.filter((n) => target.node_ids.includes(n.id));
  const sel = target?.selector ?? {};
  return nodes.filter((n) => (!sel.site || n.site === sel.site) && (sel.tags ?? []).every((t) => (n.tags ?? []).includes(t)));
}

// -- local wall time in a zone -----------------------------------------------------------------

const formatters = new Map();
function wallFormatter(zone) {
  if (!formatters.has(zone)) {
    formatters.set(zone, new Intl.DateTimeFormat("en-US", {
      timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    }));
  }
  return formatters.get(zone);
}

/** Whether the browser knows a zone. */
export function knownZone(zone) {
  try { wallFormatter(zone); return true; } catch { return false; }
}

function wallMs(ms, zone) {
  const p = Object.fromEntries(wallFormatter(zone).formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  return Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour) % 24, Number(p.minute), Number(p.second));
}

/** A UTC instant as local wall time in `zone`: "YYYY-MM-DDTHH:MM". */
export function utcToWall(iso, zone) {
  const ms = new Date(iso).getTime();
  if (!Number.isFinite(ms) || !knownZone(zone)) return "";
  return new Date(wallMs(ms, zone)).toISOString().slice(0, 16);
}

/** A local wall time "YYYY-MM-DDTHH:MM[:SS]" in `zone` as an ISO UTC instant (null when unreadable). */
export function wallToUtc(wall, zone) {
  const m = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d))?$/.exec(wall ?? "");
  if (!m || !knownZone(zone)) return null;
  const asUtc = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6] ?? 0));
  // The offsets a day before and after: a wall time read with each that lands back on itself is real;
  // twice (fall back): the first; never (spring forward): read with the offset before the change.
  const before = asUtc - (wallMs(asUtc - 86400e3, zone) - (asUtc - 86400e3));
  const after = asUtc - (wallMs(asUtc + 86400e3, zone) - (asUtc + 86400e3));
  const real = [before, after].filter((ms) => wallMs(ms, zone) === asUtc);
  const ms = real.length ? Math.min(...real) : before;
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

/** A time at a site ("7 Dec 2026, 09:00 CET") with its UTC form on hover. */
export const zoned = (iso, zone) => (iso ? h("time", { datetime: iso, title: utcShort(iso) }, when(iso, { zone, seconds: false })) : "—");

/** A take's start at a site, with its weekday ("Mon 7 Dec, 09:00 CET"; the year too when it is not this one). */
export function siteTime(iso, zone) {
  if (!iso) return "—";
  const date = new Date(iso);
  const zoneOk = zone && knownZone(zone) ? zone : undefined;
  const year = new Intl.DateTimeFormat("en", { year: "numeric", timeZone: zoneOk }).format(date);
  const text = date.toLocaleString(undefined, {
    weekday: "short", day: "numeric", month: "short", year: year === String(new Date().getFullYear()) ? undefined : "numeric",
    hour: "2-digit", minute: "2-digit", timeZone: zoneOk, timeZoneName: "short",
  });
  return h("time", { datetime: iso, title: utcShort(iso) }, text);
}

/** "2026-12-07 08:00 UTC". */
export const utcShort = (iso) => (iso ? `${new Date(iso).toISOString().slice(0, 16).replace("T", " ")} UTC` : "—");

/** Lateness in words ("on time", "late by 12 s"). */
export const lateWords = (s) => (s === null || s === undefined ? "" : s <= 0.05 ? "on time" : `late by ${lengthWords(Math.round(s))}`);

/**
 * Where the hub's `fields` problems show in a form: each name ("rrule", "solar.event", "target") has a
 * message under its field and marks its control invalid; a name's prefix ("target.node_ids" -> "target")
 * is tried when the name itself has no place. A field shows its problem once the user has changed it,
 * or once `reveal()` is called (a save was refused). `mark(fields)` answers the names that found no place.
 */
export function problemSlots() {
  const slots = new Map();
  const touched = new Set();
  let revealed = false;
  return {
    add(name, fieldEl, control = fieldEl.querySelector("input, select, textarea")) {
      const message = h("small", { class: "field-problem", id: `problem-${name.replace(/\W/g, "-")}-${slots.size}`, hidden: true });
      fieldEl.append(message);
      slots.set(name, { control, message });
      for (const type of ["input", "change"]) fieldEl.addEventListener(type, () => touched.add(name));
      return fieldEl;
    },
    touch(name) { touched.add(name); },
    reveal() { revealed = true; },
    mark(fields = {}) {
      for (const { control, message } of slots.values()) {
        message.hidden = true;
        message.textContent = "";
        control?.removeAttribute("aria-invalid");
        if (control && control.getAttribute("aria-describedby") === message.id) control.removeAttribute("aria-describedby");
      }
      const left = [];
      for (const [name, problem] of Object.entries(fields)) {
        const key = slots.has(name) ? name : name.split(/[.[]/)[0];
        const slot = slots.get(key);
        if (!slot) { left.push(name); continue; }
        if (!revealed && !touched.has(key)) continue;
        slot.message.textContent = slot.message.textContent ? `${slot.message.textContent}; ${problem}` : String(problem);
        slot.message.hidden = false;
        if (slot.control) {
          slot.control.setAttribute("aria-invalid", "true");
          if (!slot.control.hasAttribute("aria-describedby")) slot.control.setAttribute("aria-describedby", slot.message.id);
        }
      }
      return left;
    },
  };
}

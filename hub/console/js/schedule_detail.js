// One schedule: what, where and when in words, run now / skip the next take / enable / disable / delete
// (each as its `actions` entry allows, with the reason when not), and the occurrence history: each take
// at the site and in UTC, its state and reason, lateness, the recordings it made, and unskip.
import { api, can, listAll } from "./api.js";
import { confirmAction, field, fill, h, notify, select, show, timeEl } from "./dom.js";
import { plural } from "./words.js";
import {
  CONFLICT_WORDS, SOLAR_EVENTS, lateWords, lengthWords, scheduleUrl, stateChip, targetWords, utcShort, whenWords, zoned,
} from "./schedule_rules.js";

const POLL_MS = 5000;
const WINDOWS = [
  ["default", "The past week and the next two"],
  ["past30", "The past 30 days"],
  ["next30", "The next 30 days"],
];
const DAY_MS = 86400e3;

function windowParams(choice) {
  const now = Date.now();
  if (choice === "past30") return { from: new Date(now - 30 * DAY_MS).toISOString(), to: new Date(now).toISOString(), limit: 1000 };
  if (choice === "next30") return { from: new Date(now).toISOString(), to: new Date(now + 30 * DAY_MS).toISOString(), limit: 1000 };
  return { limit: 1000 };
}

/** Ask for run-now's length (the schedule's own by default); resolves to seconds or null when cancelled. */
function askRunNow(schedule, nodeCount) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "run-now-title" });
    const minutes = h("input", { type: "number", name: "run_minutes", min: 0.02, max: 10080, step: "any", value: Math.round((schedule.duration_s / 60) * 100) / 100 });
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    const cancel = h("button", { type: "button", onclick: () => done(null) }, "Cancel");
    fill(dialog, h("h2", { id: "run-now-title" }, `Run ${schedule.name} now?`),
      h("form", { noValidate: true, onsubmit: (event) => { event.preventDefault(); const m = Number(minutes.value); done(m > 0 ? Math.max(1, Math.round(m * 60)) : schedule.duration_s); } },
        h("p", {}, `Each of its nodes${nodeCount === null ? "" : ` (${plural(nodeCount, "node")} now)`} starts recording at once; the planned takes stay as they are.`),
        field("Length (minutes)", minutes),
        h("div", { class: "buttons" }, cancel, h("button", { type: "submit", class: "primary" }, "Run now"))));
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(null); });
    document.body.append(dialog);
    dialog.showModal();
    minutes.focus();
  });
}

function recordingLinks(recordings, names) {
  if (!recordings?.length) return "—";
  return h("ul", { class: "schedule-recordings" }, recordings.map((r) => h("li", {},
    h("a", { href: `#/recordings/${encodeURIComponent(r.id)}` }, names.get(r.node_id) ?? r.node_id ?? r.id),
    " ", h("span", { class: `state state-${r.status}` }, r.status),
    r.late_s > 0.05 ? h("span", { class: "hint" }, ` ${lateWords(r.late_s)}`) : null)));
}

function lateness(o) {
  if (typeof o.late === "number") return lateWords(o.late);
  const lates = (o.recordings ?? []).map((r) => r.late_s).filter((s) => typeof s === "number");
  if (lates.length) return lateWords(Math.max(...lates));
  return o.late === true ? "late" : "—";
}

export function renderSchedule(view, id) {
  let gone = false;
  let timer = null;
  let schedule = null;
  let names = new Map();
  const url = scheduleUrl(id);
  const heading = h("h2", {}, "Schedule");
  const buttons = h("div", { class: "button-row schedule-actions" });
  const status = h("p", { role: "status", class: "schedule-status" });
  const error = h("p", { class: "error", role: "alert" });
  const facts = h("dl", { class: "facts" });
  const range = select(WINDOWS, "default", { name: "occurrence_window" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const absent = h("ul", { class: "schedule-absent", hidden: true });
  const weekLink = h("a", { href: "#/schedules/week" }, "Week view");

  const act = async (path, body, message, what) => {
    error.textContent = "";
    try {
      await api(`${url}/${path}`, { method: "POST", body });
      status.textContent = message;
      await load();
    } catch (err) { error.textContent = `Could not ${what}: ${err.message}`; }
  };
  const patch = async (changes, message) => {
    try {
      await api(url, { method: "PATCH", body: { ...changes, version: schedule.version } });
      status.textContent = message;
      await load();
    } catch (err) { error.textContent = `Not changed: ${err.message}`; }
  };
  // Look again while a take is under way or about to start; never redraw under the keyboard focus.
  const busy = (rows) => rows.some((o) => ["dispatched", "recording"].includes(o.state)
    || (o.state === "planned" && new Date(o.start_utc).getTime() - Date.now() < 2 * POLL_MS + 60e3 && new Date(o.end_utc).getTime() > Date.now() - 60e3));

  const button = (key, label, onclick, cls = null) => {
    const entry = schedule.actions?.[key] ?? { allowed: true };
    const reasonId = `schedule-action-${key}-reason`;
    return h("span", { class: "schedule-action" },
      h("button", { type: "button", class: cls, disabled: !entry.allowed, "aria-describedby": entry.allowed || !entry.reason ? null : reasonId, onclick }, label),
      !entry.allowed && entry.reason ? h("small", { class: "hint", id: reasonId }, entry.reason) : null);
  };

  const drawActions = () => {
    if (!can("schedule:manage")) { fill(buttons, h("p", { class: "hint" }, "Changing schedules needs the permission schedule:manage.")); return; }
    const next = schedule.next_occurrence;
    fill(buttons,
      h("a", { class: "button", href: `#/schedules/${encodeURIComponent(id)}/edit` }, "Edit"),
      button("run_now", "Run now", async () => {
        const seconds = await askRunNow(schedule, null);
        if (seconds !== null) act("run-now", seconds === schedule.duration_s ? undefined : { duration_s: seconds }, `${schedule.name} runs now for ${lengthWords(seconds)}.`, "run it now");
      }, "primary"),
      button("skip_next", "Skip next", async () => {
        const at = next ? `${next.local_start?.slice(0, 16).replace("T", " ") ?? utcShort(next.start_utc)} (${schedule.time_zone})` : "the next take";
        if (await confirmAction("Skip the next take?", `The take at ${at} is not recorded; you can undo it until it starts.`, "Skip it")) {
          act("skip-next", undefined, `The take at ${at} is skipped.`, "skip the next take");
        }
      }),
      schedule.enabled
        ? button("disable", "Disable", () => patch({ enabled: false }, `${schedule.name} is disabled: nothing more is dispatched.`))
        : button("enable", "Enable", () => patch({ enabled: true }, `${schedule.name} is enabled.`)),
      button("delete", "Delete", async () => {
        if (!(await confirmAction(`Delete ${schedule.name}?`, "Its takes not yet started are withdrawn from the nodes; recordings already made stay in the library.", "Delete", true))) return;
        try { await api(url, { method: "DELETE" }); notify(`Schedule ${schedule.name} deleted.`); location.hash = "#/schedules"; } catch (err) { error.textContent = `Not deleted: ${err.message}`; }
      }, "danger"));
  };

  const drawFacts = () => {
    const s = schedule;
    const solar = s.solar ? `${s.solar.offset_minutes ? `${Math.abs(s.solar.offset_minutes)} min ${s.solar.offset_minutes < 0 ? "before" : "after"} ` : ""}`
      + `${SOLAR_EVENTS.find(([v]) => v === s.solar.event)?.[1] ?? s.solar.event}`
      + `${s.solar.latitude !== undefined && s.solar.latitude !== null ? ` at ${s.solar.latitude}, ${s.solar.longitude}` : " at the site's coordinates"}` : null;
    fill(facts, [
      ["State", h("span", { class: `state ${s.enabled ? "state-succeeded" : ""}` }, s.enabled ? "enabled" : "disabled")],
      ["Records on", [targetWords(s.target, names), s.target?.selector && Array.isArray(s.node_ids)
        ? h("span", { class: "hint" }, s.node_ids.length ? ` — now ${s.node_ids.map((i) => names.get(i) ?? i).join(", ")}` : " — no node matches now") : null]],
      ["Site", s.site ?? "several or none"],
      ["Time zone", s.time_zone],
      ["When", whenWords(s)],
      ["First start", `${String(s.start_local).replace("T", " ")} (${s.time_zone})`],
      ...(s.rrule ? [["RRULE", h("code", { class: "wrap" }, s.rrule)]] : []),
      ...(solar ? [["Solar anchor", solar]] : []),
      ...(s.exdates?.length ? [["Exceptions", s.exdates.map((x) => x.replace("T", " ")).join(", ")]] : []),
      ...(s.valid_from || s.valid_until ? [["Valid", [s.valid_from ? ["from ", zoned(s.valid_from, s.time_zone)] : null, s.valid_from && s.valid_until ? " " : null,
        s.valid_until ? ["until ", zoned(s.valid_until, s.time_zone)] : null]]] : []),
      ["Next take", s.next_occurrence ? [zoned(s.next_occurrence.start_utc, s.time_zone), ` (${utcShort(s.next_occurrence.start_utc)})`] : "none ahead"],
      ["Profile", s.profile_id],
      ...(s.channel_map_id ? [["Channel map", s.channel_map_id]] : []),
      ...(Object.keys(s.metadata ?? {}).length ? [["Metadata", show(s.metadata)]] : []),
      ...(s.tags?.length ? [["Tags", s.tags.join(", ")]] : []),
      ["On a clash", CONFLICT_WORDS[s.on_conflict] ?? s.on_conflict],
      ...(s.description ? [["Description", s.description]] : []),
      ["Version", `v${s.version}`],
      ["Made", [timeEl(s.created_at), s.created_by?.name ? ` by ${s.created_by.name}` : ""]],
    ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  };

  const loadOccurrences = async (force = true) => {
    clearTimeout(timer);
    let rows = [];
    try {
      const body = await api(`${url}/occurrences`, { params: windowParams(range.value) });
      if (gone) return;
      rows = body.data ?? [];
      if (!force && tbody.contains(document.activeElement)) { timer = setTimeout(() => loadOccurrences(false), POLL_MS); return; }
      const gaps = body.absent ?? body.meta?.absent ?? [];
      const zone = schedule.time_zone;
      const now = Date.now();
      caption.textContent = rows.length ? `${plural(rows.length, "take")} in time order; times at the site (${zone})` : "No take in this window.";
      fill(tbody, rows.map((o) => {
        const future = new Date(o.start_utc).getTime() > now;
        const when = o.local_start ? o.local_start.slice(0, 16).replace("T", " ") : utcShort(o.start_utc);
        return h("tr", { dataset: { state: o.state, start: o.start_utc } },
          h("td", {}, zoned(o.start_utc, zone), o.run_now && !/run now/i.test(o.reason ?? "") ? h("span", { class: "hint" }, " run now") : null),
          h("td", { class: "col-utc" }, utcShort(o.start_utc)),
          h("td", { class: "col-state" }, stateChip(o.state)),
          h("td", { class: "col-reason" }, o.reason ?? ""),
          h("td", {}, lateness(o)),
          h("td", {}, recordingLinks(o.recordings, names)),
          h("td", {}, o.state === "skipped" && o.id && future && can("schedule:manage")
            ? h("button", { type: "button", class: "small", "aria-label": `Unskip the take at ${when}`, onclick: () => act(`occurrences/${encodeURIComponent(o.id)}/unskip`, undefined, `The take at ${when} is back on.`, "unskip it") }, "Unskip")
            : null));
      }));
      fill(absent, gaps.slice(0, 7).map((g) => h("li", {}, g.reason ?? `no take on ${g.day}`)),
        gaps.length > 7 ? h("li", {}, `and ${plural(gaps.length - 7, "more day")} without a take`) : null);
      absent.hidden = !gaps.length;
    } catch (err) { if (!gone) error.textContent = `Could not load the occurrences: ${err.message}`; }
    if (!gone && busy(rows)) timer = setTimeout(() => loadOccurrences(false), POLL_MS);
  };

  const load = async () => {
    try {
      schedule = (await api(url)).data;
    } catch (err) {
      if (err.status === 404) fill(view, h("section", {}, h("h2", {}, "Schedule"), h("p", { class: "error", role: "alert" }, "There is no such schedule, or it is not in your sites."), h("a", { href: "#/schedules" }, "All schedules")));
      else error.textContent = `Could not load the schedule: ${err.message}`;
      return;
    }
    if (gone) return;
    error.textContent = "";
    heading.textContent = `Schedule ${schedule.name}`;
    weekLink.href = schedule.site ? `#/schedules/week?site=${encodeURIComponent(schedule.site)}` : "#/schedules/week";
    drawFacts();
    drawActions();
    await loadOccurrences();
  };
  range.addEventListener("change", () => loadOccurrences());

  fill(view, h("section", { class: "schedule-page" },
    h("div", { class: "title-row" }, heading, weekLink, h("a", { href: "#/schedules" }, "All schedules")),
    buttons, status, error, facts,
    h("section", { class: "schedule-history", "aria-labelledby": "schedule-history-h" },
      h("div", { class: "title-row" }, h("h3", { id: "schedule-history-h" }, "Takes"), field("Show", range)),
      h("div", { class: "table-wrap" }, h("table", { class: "schedule-occurrences" }, caption,
        h("thead", {}, h("tr", {}, [["Starts"], ["UTC", "col-utc"], ["State"], ["Reason", "col-reason"], ["Lateness"], ["Recordings"], ["Undo"]]
          .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody)),
      absent)));
  (async () => {
    if (can("node:read")) {
      try { names = new Map((await listAll("/api/v1/nodes")).map((n) => [n.id, n.name])); } catch { /* names are a convenience */ }
    }
    if (!gone) load();
  })();
  return () => { gone = true; clearTimeout(timer); };
}

// The live preview of an unsaved schedule: the next occurrences at the site and in UTC, the days with
// none and why (polar day or night), and the problems the hub sees, asked for as the user types
// (debounced; an older answer arriving after a newer one is dropped). A summary line is a live region.
import { api } from "./api.js";
import { fill, h } from "./dom.js";
import { plural } from "./words.js";
import { SCHEDULES, siteTime, utcShort } from "./schedule_rules.js";

const DEBOUNCE_MS = 350;
const ABSENT_SHOWN = 5;

/**
 * `body()`: the schedule as the form has it now (or null when it cannot be read yet, with the reason);
 * `onFields(fields)`: the hub's problems, for the form to mark; `onExcept(local)`: an occurrence to
 * make an exception of (its local wall time), or null to offer no such button.
 */
export function schedulePreview({ body, onFields, onExcept = null }) {
  const summary = h("p", { class: "schedule-preview-summary", role: "status", "aria-live": "polite", "aria-atomic": "true" }, "Fill in the schedule to see when it records.");
  const problems = h("ul", { class: "schedule-problems", hidden: true });
  const tbody = h("tbody");
  const zoneHead = h("th", { scope: "col" }, "At the site");
  const table = h("table", { class: "schedule-preview-table", hidden: true },
    h("caption", { class: "visually-hidden" }, "The next occurrences"),
    h("thead", {}, h("tr", {}, zoneHead, h("th", { scope: "col" }, "UTC"), h("th", { scope: "col", class: "col-note" }, "Note"),
      onExcept ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Exception")) : null)), tbody);
  const noteHead = table.querySelector("th.col-note");
  const absent = h("ul", { class: "schedule-absent", hidden: true });
  const element = h("section", { class: "schedule-preview manage-card", "aria-labelledby": "schedule-preview-h" },
    h("h3", { id: "schedule-preview-h" }, "Next occurrences"), summary, problems, h("div", { class: "table-wrap" }, table), absent);
  let timer = null;
  let turn = 0;
  let lastText = null;

  const show = (data, zone) => {
    const fields = data.fields ?? {};
    onFields?.(fields);
    const issues = Object.entries(fields);
    fill(problems, issues.map(([name, message]) => h("li", {}, h("strong", {}, name.replaceAll("_", " ")), `: ${message}`)));
    problems.hidden = !issues.length;
    const occ = data.occurrences ?? [];
    const gaps = data.absent ?? [];
    zoneHead.textContent = zone ? `At the site (${zone})` : "At the site";
    const notes = occ.some((o) => o.note);
    noteHead.hidden = !notes;
    fill(tbody, occ.map((o) => h("tr", {},
      h("td", { class: "col-local" }, siteTime(o.start_utc, zone)),
      h("td", { class: "col-utc" }, h("time", { datetime: o.start_utc }, utcShort(o.start_utc))),
      notes ? h("td", { class: "col-note" }, o.note ?? "") : null,
      onExcept ? h("td", {}, o.local_start ? h("button", { type: "button", class: "small", "aria-label": `Except ${o.local_start.slice(0, 16).replace("T", " ")}`,
        onclick: () => onExcept(o.local_start.slice(0, 19)) }, "Except") : null) : null)));
    table.hidden = !occ.length;
    fill(absent, gaps.slice(0, ABSENT_SHOWN).map((g) => h("li", {}, g.reason ?? `no occurrence on ${g.day}`)),
      gaps.length > ABSENT_SHOWN ? h("li", {}, `and ${plural(gaps.length - ABSENT_SHOWN, "more day")} without one`) : null);
    absent.hidden = !gaps.length;
    const toFix = issues.length ? ` ${plural(issues.length, "problem")} to fix before it can be saved.` : "";
    if (occ.length) {
      summary.textContent = `The next ${plural(occ.length, "occurrence")}: first ${occ[0].local_start ? occ[0].local_start.slice(0, 16).replace("T", " ") : utcShort(occ[0].start_utc)}`
        + ` at the site (${utcShort(occ[0].start_utc)})${gaps.length ? `; ${plural(gaps.length, "day")} without one` : ""}.${toFix}`;
    } else if (issues.length && !data.occurrences) summary.textContent = toFix.trim();
    else if (toFix && !gaps.length) summary.textContent = `No occurrence to show.${toFix}`;
    else summary.textContent = (gaps.length ? `No occurrence ahead: ${gaps[0].reason}.` : "No occurrence ahead: the rule or the validity window ends before now.") + toFix;
  };

  const ask = async () => {
    const { value, reason, zone } = body();
    if (!value) {
      summary.textContent = reason;
      table.hidden = absent.hidden = problems.hidden = true;
      lastText = null;
      return;
    }
    const text = JSON.stringify(value);
    if (text === lastText) return;
    lastText = text;
    const mine = ++turn;
    element.setAttribute("aria-busy", "true");
    try {
      const { data } = await api(`${SCHEDULES}/preview`, { method: "POST", body: value });
      if (mine !== turn) return;
      show(data, zone ?? value.time_zone);
    } catch (err) {
      if (mine !== turn) return;
      lastText = null;
      if (err.detail?.fields) show({ fields: err.detail.fields }, zone);
      else summary.textContent = `No preview: ${err.message}`;
    } finally {
      if (mine === turn) element.removeAttribute("aria-busy");
    }
  };

  return {
    element,
    /** Ask again after a pause in typing (`now`: at once). */
    update(now = false) {
      clearTimeout(timer);
      if (now) ask();
      else timer = setTimeout(ask, DEBOUNCE_MS);
    },
    stop() { clearTimeout(timer); turn++; },
  };
}

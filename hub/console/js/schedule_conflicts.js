// A 409 `schedule_conflict` in words: each schedule this one clashes with (a link), on which nodes, and
// its first clashing takes side by side at the site and in UTC; then the ways to save anyway.
import { fill, h } from "./dom.js";
import { plural } from "./words.js";
import { utcShort, zoned } from "./schedule_rules.js";

const span = (side, zone) => (side ? [zoned(side.start_utc, zone), " – ", zoned(side.end_utc, zone)] : "—");

/**
 * Fill `box` with the conflicts of `error` (the ApiError's body); `resolve(onConflict)` saves again with
 * "skip" or "allow"; `names`: node id -> name; `zone`: the schedule's zone.
 */
export function showConflicts(box, error, { zone, names = new Map(), resolve }) {
  const conflicts = Array.isArray(error?.conflicts) ? error.conflicts : [];
  const skip = h("button", { type: "button", class: "primary", onclick: () => resolve("skip") }, "Save, skipping clashing takes");
  const allow = h("button", { type: "button", onclick: () => resolve("allow") }, "Save, recording both");
  fill(box,
    h("h3", { id: "schedule-conflict-h", tabIndex: -1 }, "This schedule clashes with another"),
    h("p", {}, error?.message ?? "A node would record two takes at once."),
    conflicts.map((c) => h("div", { class: "schedule-conflict", dataset: { scheduleId: c.schedule_id } },
      h("h4", {}, h("a", { href: `#/schedules/${encodeURIComponent(c.schedule_id)}` }, c.name ?? c.schedule_id),
        ` on ${(c.node_ids ?? []).map((id) => names.get(id) ?? id).join(", ") || "its nodes"}`),
      h("div", { class: "table-wrap" }, h("table", { class: "schedule-clash-table" },
        h("caption", {}, `First ${plural((c.clashes ?? []).length, "clash", "clashes")} (times at the site; UTC on hover)`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "This schedule"), h("th", { scope: "col" }, c.name ?? "The other"),
          h("th", { scope: "col", class: "col-utc" }, "Starts (UTC)"))),
        h("tbody", {}, (c.clashes ?? []).map((x) => h("tr", {}, h("td", {}, span(x.this, zone)), h("td", {}, span(x.other, zone)),
          h("td", { class: "col-utc" }, utcShort(x.this?.start_utc))))))))),
    h("p", {}, "Save anyway? Skipping leaves a clashing take out on the node that has both (the other schedule records it); "
      + "recording both runs two recorders on that node from the same input."),
    h("div", { class: "button-row" }, skip, allow));
  box.hidden = false;
  box.querySelector("h3").focus();
}

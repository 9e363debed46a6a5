// When a schedule records: a local start (or a solar event with an offset), a duration, the recurrence
// (presets that write the RRULE, or the RRULE itself, read back into a preset when it is one), exception
// dates and a validity window, all in the schedule's zone.
import { field, fill, h, select } from "./dom.js";
import { DAYS, PRESETS, SOLAR_EVENTS, presetOf, ruleOf, utcToWall, wallToUtc } from "./schedule_rules.js";

const UNITS = [["60", "minutes"], ["3600", "hours"], ["1", "seconds"]];
const wallText = (value) => (value && value.length === 16 ? `${value}:00` : value || null);
const number = (text) => (text.trim() === "" ? null : Number(text));

/** `slots`: where problems show; `onChange()`: after every change. Answers {element, value(zone), set(schedule, zone), addException(local)}. */
export function whenEditor({ slots, onChange }) {
  const kindName = `start-kind-${Math.random().toString(36).slice(2, 7)}`;
  const atClock = h("input", { type: "radio", name: kindName, value: "clock", checked: true });
  const atSun = h("input", { type: "radio", name: kindName, value: "solar" });
  const start = h("input", { type: "datetime-local", name: "start_local", step: 1 });
  const startHint = h("small", { class: "hint" }, "Local wall time at the site.");
  const startField = field("Starts", start);
  startField.append(startHint);
  const event = select(SOLAR_EVENTS, "sunrise", { name: "solar_event" });
  const offset = h("input", { type: "number", name: "solar_offset_minutes", min: -720, max: 720, step: 1, value: 0 });
  const latitude = h("input", { type: "number", name: "solar_latitude", step: "any", min: -90, max: 90 });
  const longitude = h("input", { type: "number", name: "solar_longitude", step: "any", min: -180, max: 180 });
  const solarBox = h("div", { class: "schedule-solar" },
    slots.add("solar.event", field("Solar event", event)),
    slots.add("solar.offset_minutes", field("Offset (minutes)", offset, "Negative: before the event, e.g. -30.")),
    slots.add("solar.latitude", field("Latitude (optional)", latitude, "Empty: the site's.")),
    slots.add("solar.longitude", field("Longitude (optional)", longitude, "Empty: the site's.")));
  const duration = h("input", { type: "number", name: "duration", min: 1, step: "any", value: 1 });
  const unit = select(UNITS, "3600", { name: "duration_unit" });
  const durationBox = h("div", { class: "schedule-duration" }, slots.add("duration_s", field("Duration", duration)), field("Unit", unit));

  const preset = select(PRESETS, "once", { name: "repeat" });
  const dayChecks = DAYS.map(([code]) => h("input", { type: "checkbox", name: "byday", value: code }));
  const days = h("fieldset", { class: "schedule-days" }, h("legend", {}, "On days"),
    DAYS.map(([, label], i) => h("label", { class: "check" }, dayChecks[i], label)));
  const every = h("input", { type: "number", name: "every", min: 1, step: 1, value: 1 });
  const everyHint = h("small", { class: "hint" }, "hours");
  const everyField = field("Every", every);
  everyField.append(everyHint);
  const rrule = h("input", { name: "rrule", autocomplete: "off", spellcheck: "false", placeholder: "empty: once", class: "mono" });
  const rruleField = slots.add("rrule", field("RRULE", rrule, "RFC 5545 without DTSTART; the choice above writes it, or write your own."));

  const exceptions = [];
  const exList = h("ul", { class: "schedule-exdates" });
  const exInput = h("input", { type: "datetime-local", name: "exdate", step: 1 });
  const drawExceptions = () => fill(exList, exceptions.length ? exceptions.map((x, i) => h("li", {}, x.replace("T", " "),
    h("button", { type: "button", class: "small", "aria-label": `Remove exception ${x.replace("T", " ")}`, onclick: () => { exceptions.splice(i, 1); drawExceptions(); onChange(); } }, "Remove")))
    : h("li", { class: "hint" }, "None."));
  const addException = (local) => {
    const text = wallText(local);
    if (!text || exceptions.includes(text)) return;
    exceptions.push(text);
    exceptions.sort();
    drawExceptions();
    onChange();
  };
  const exField = slots.add("exdates", h("fieldset", { class: "schedule-exceptions" }, h("legend", {}, "Exceptions"), exList,
    h("div", { class: "inline-form" }, field("Exception (local time)", exInput),
      h("button", { type: "button", onclick: () => { if (exInput.value) { addException(exInput.value); exInput.value = ""; } } }, "Add exception"))), null);
  const validFrom = h("input", { type: "datetime-local", name: "valid_from", step: 1 });
  const validUntil = h("input", { type: "datetime-local", name: "valid_until", step: 1 });

  const syncRepeat = () => {
    const p = preset.value;
    days.hidden = p !== "weekly";
    everyField.hidden = p !== "hourly" && p !== "minutely";
    everyHint.textContent = p === "hourly" ? "hours" : "minutes";
  };
  const writeRule = () => {
    const rule = ruleOf({ preset: preset.value, days: dayChecks.filter((c) => c.checked).map((c) => c.value), every: Math.max(1, Math.round(Number(every.value) || 1)) }, atSun.checked);
    if (rule !== undefined) rrule.value = rule ?? "";
    syncRepeat();
  };
  const readRule = () => {
    const found = presetOf(rrule.value.trim() || null, atSun.checked);
    preset.value = found.preset;
    if (found.days) for (const c of dayChecks) c.checked = found.days.includes(c.value);
    if (found.every) every.value = found.every;
    syncRepeat();
  };
  const syncStart = () => {
    solarBox.hidden = !atSun.checked;
    startHint.textContent = atSun.checked ? "Only its date counts: the first day; the sun sets the time each day." : "Local wall time at the site.";
  };
  preset.addEventListener("change", () => {
    if (preset.value === "weekly" && !dayChecks.some((c) => c.checked)) dayChecks[0].checked = true;
    writeRule();
    if (preset.value === "custom") rrule.focus();
  });
  for (const el of [...dayChecks, every]) el.addEventListener(el.type === "checkbox" ? "change" : "input", writeRule);
  rrule.addEventListener("input", readRule);
  // The same preset means another rule with a solar anchor ("once" is one day of it, not no rule).
  for (const el of [atClock, atSun]) el.addEventListener("change", () => { syncStart(); if (preset.value !== "custom") writeRule(); });
  const element = h("fieldset", { class: "schedule-when" }, h("legend", {}, "When"),
    h("div", { class: "schedule-radios", role: "radiogroup", "aria-label": "Start at" },
      h("label", { class: "check" }, atClock, "At a clock time"), h("label", { class: "check" }, atSun, "At a solar event")),
    h("div", { class: "schedule-grid" }, slots.add("start_local", startField), durationBox),
    solarBox,
    h("div", { class: "schedule-grid" }, field("Repeats", preset), everyField), days, rruleField,
    exField,
    h("div", { class: "schedule-grid" },
      slots.add("valid_from", field("Valid from (local time)", validFrom, "Optional.")),
      slots.add("valid_until", field("Valid until (local time)", validUntil, "Optional; the last take starts before it."))));
  element.addEventListener("input", () => onChange());
  element.addEventListener("change", () => onChange());
  syncRepeat();
  syncStart();
  drawExceptions();

  return {
    element,
    addException,
    value(zone) {
      const seconds = number(duration.value);
      return {
        start_local: wallText(start.value),
        duration_s: seconds === null ? null : Math.round(seconds * Number(unit.value)),
        rrule: rrule.value.trim() || null,
        exdates: [...exceptions],
        valid_from: validFrom.value ? wallToUtc(validFrom.value, zone) : null,
        valid_until: validUntil.value ? wallToUtc(validUntil.value, zone) : null,
        solar: atSun.checked ? {
          event: event.value, offset_minutes: Math.round(Number(offset.value) || 0),
          ...(latitude.value !== "" || longitude.value !== "" ? { latitude: number(latitude.value), longitude: number(longitude.value) } : {}),
        } : null,
      };
    },
    set(s, zone) {
      start.value = (s.start_local ?? "").slice(0, 19);
      const d = s.duration_s ?? 3600;
      unit.value = d % 3600 === 0 ? "3600" : d % 60 === 0 ? "60" : "1";
      duration.value = d / Number(unit.value);
      (s.solar ? atSun : atClock).checked = true;
      rrule.value = s.rrule ?? "";
      readRule();
      exceptions.splice(0, exceptions.length, ...(s.exdates ?? []));
      drawExceptions();
      validFrom.value = s.valid_from ? utcToWall(s.valid_from, zone) : "";
      validUntil.value = s.valid_until ? utcToWall(s.valid_until, zone) : "";
      (s.solar ? atSun : atClock).checked = true;
      if (s.solar) {
        event.value = s.solar.event;
        offset.value = s.solar.offset_minutes ?? 0;
        latitude.value = s.solar.latitude ?? "";
        longitude.value = s.solar.longitude ?? "";
      }
      syncStart();
    },
  };
}

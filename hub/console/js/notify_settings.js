// The hub-wide notification settings as a small panel: whether channels may send to private and loopback addresses,
// and how bursts and flapping are held back. Anyone who may read settings sees them; an admin changes them (PUT).
import { api, can } from "./api.js";
import { field, fill, h, notify } from "./dom.js";
import { fieldProblems } from "./field_problems.js";
import { SETTINGS } from "./notify_kinds.js";

const NUMBERS = [
  ["storm_window_s", "Storm window (s)", "Notices of one kind and site this close together are grouped.", 0, 120, 0.5],
  ["storm_threshold", "Storm threshold", "Grouped into one message from this many on.", 2, 1000, 1],
  ["flap_hold_s", "Flap hold (s)", "A flapping condition is told once per this long.", 0, 86400, 1],
];

/** The panel for `settings` (from GET /settings/notifications); `onSaved(settings)` after a PUT. */
export function settingsPanel(settings, onSaved = () => {}) {
  const manage = can("settings:manage");
  const slots = fieldProblems();
  const error = h("p", { class: "error", role: "alert" });
  const allow = h("input", { type: "checkbox", name: "allow_private_destinations", checked: Boolean(settings.allow_private_destinations), disabled: !manage });
  const numbers = NUMBERS.map(([name, label, hint, min, max, step]) => {
    const input = h("input", { type: "number", name, min, max, step, value: String(settings[name] ?? ""), disabled: !manage });
    return { name, input, el: slots.add(name, field(label, input, hint)) };
  });
  const form = h("form", { class: "upload-policy-form notify-settings", "aria-label": "Notification settings", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    slots.mark({});
    const body = { allow_private_destinations: allow.checked };
    for (const n of numbers) body[n.name] = n.input.value.trim() === "" ? null : Number(n.input.value);
    try {
      const answer = await api(SETTINGS, { method: "PUT", body });
      notify("Notification settings saved.");
      onSaved(answer?.data ?? body);
    } catch (err) {
      const left = slots.mark(err.detail?.fields ?? {});
      error.textContent = err.status === 400 ? `Not saved: ${left.length ? left.join("; ") : "see the fields marked."}` : `Not saved: ${err.message}`;
    }
  } },
  slots.add("allow_private_destinations", h("div", { class: "field" }, h("label", { class: "check" }, allow,
    "Allow private and loopback destinations (never link-local or cloud metadata addresses)"))),
  h("div", { class: "upload-form-grid" }, numbers.map((n) => n.el)),
  manage ? h("div", { class: "button-row" }, h("button", { type: "submit" }, "Save settings")) : h("p", { class: "hint" }, "Only an administrator changes these."),
  error);
  return h("details", { class: "notify-settings-box provider-credentials" }, h("summary", {}, "Notification settings"), form);
}

/** Fill `slot` with the panel, or leave it empty when the settings cannot be read. */
export function showSettings(slot, settings, open = false) {
  if (!settings) { fill(slot); return; }
  fill(slot, settingsPanel(settings, (saved) => showSettings(slot, { ...settings, ...saved }, true)));
  slot.firstElementChild.open = open;
}

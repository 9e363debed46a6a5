// What a notification channel is told about: event kinds (the hub's known ones as checkboxes with what each means,
// plus any other kind or "health.*" pattern typed in), health kinds, sites, a minimum severity, and quiet hours in a
// time zone (critical may break through). Used inside the new-channel form and, saved on its own with PATCH and the
// channel's version, on a channel's page.
import { api, listAll } from "./api.js";
import { field, h, notify, select } from "./dom.js";
import { fieldProblems } from "./field_problems.js";
import { channelUrl } from "./notify_kinds.js";

export const DEFAULT_SUBSCRIPTION = {
  events: ["health.opened", "health.resolved", "node.offline", "node.online", "recording.job.failed", "upload.failed"],
  health_kinds: [], sites: [], min_severity: "warning", quiet_hours: null,
};
const SEVERITIES = [["info", "info and above (everything)"], ["warning", "warning and above"], ["critical", "critical only"]];
const splitList = (text) => text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);

/** [[name, description]] from a list of {name, description} (or strings), or an object name -> description. */
function described(given, fallback = []) {
  if (Array.isArray(given)) return given.map((e) => (typeof e === "string" ? [e, ""] : [e.name ?? e.type ?? e.kind, e.description ?? ""])).filter(([t]) => t);
  if (given && typeof given === "object") return Object.entries(given).map(([t, d]) => [t, typeof d === "string" ? d : d?.description ?? ""]);
  return fallback;
}

/** The known event kinds and health kinds from the notification settings: {events, health}, each [[name, description]]. */
export function eventKinds(settings) {
  return { events: described(settings?.event_kinds, DEFAULT_SUBSCRIPTION.events.map((t) => [t, ""])), health: described(settings?.health_kinds) };
}

/** The sites a subscription may name: [{id, name}] (empty when they cannot be read). */
export async function loadSites() {
  try { return await listAll("/api/v1/sites"); } catch { return []; }
}

function timeZones(current) {
  let zones = [];
  try { zones = Intl.supportedValuesOf("timeZone"); } catch { zones = []; }
  const all = new Set(["UTC", ...zones]);
  if (current) all.add(current);
  return [...all];
}

/** Checkboxes for the known names (with what each means): {boxes, chosen(), others} (`others`: chosen names not known). */
function checkList(name, known, chosen, off) {
  const names = new Set(known.map(([t]) => t));
  const inputs = known.map(([value]) => h("input", { type: "checkbox", name, value, checked: chosen.includes(value), disabled: off }));
  return {
    boxes: known.map(([value, description], i) => h("label", { class: "check notify-event" }, inputs[i],
      h("span", {}, h("code", {}, value), description ? h("span", { class: "hint" }, ` ${description}`) : null))),
    chosen: () => inputs.filter((b) => b.checked).map((b) => b.value),
    others: chosen.filter((c) => !names.has(c)),
  };
}

/** The editor's fields: {element, value()} (the subscription as the API takes it). `slots` marks 400s at fields. */
export function subscriptionEditor(subscription, { kinds, sites, slots, off = false }) {
  const s = { ...DEFAULT_SUBSCRIPTION, ...(subscription ?? {}) };
  const events = checkList("event", kinds.events, s.events ?? [], off);
  const others = h("input", { name: "other_events", value: events.others.join(", "), disabled: off,
    autocomplete: "off", spellcheck: "false", placeholder: "e.g. schedule.occurrence.missed, health.*" });
  const health = checkList("health_kind", kinds.health, s.health_kinds ?? [], off);
  const otherHealth = h("input", { name: "other_health_kinds", value: health.others.join(", "), disabled: off,
    autocomplete: "off", spellcheck: "false", placeholder: "e.g. audio.silence" });
  const siteIds = new Set(s.sites ?? []);
  const siteBoxes = [...sites.map((x) => [x.id, x.name ?? x.id]), ...[...siteIds].filter((id) => !sites.some((x) => x.id === id)).map((id) => [id, id])]
    .map(([id, name]) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "site", value: id, checked: siteIds.has(id), disabled: off }), name));
  const severity = select(SEVERITIES, s.min_severity ?? "warning", { name: "min_severity", disabled: off });
  const q = s.quiet_hours;
  const quiet = h("input", { type: "checkbox", name: "quiet_hours", checked: Boolean(q), disabled: off });
  const start = h("input", { type: "time", name: "quiet_start", value: q?.start ?? "22:00", disabled: off });
  const end = h("input", { type: "time", name: "quiet_end", value: q?.end ?? "07:00", disabled: off });
  const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const zone = select(timeZones(q?.time_zone ?? browserZone).map((z) => [z, z]), q?.time_zone ?? browserZone, { name: "quiet_time_zone", disabled: off });
  const breaks = h("input", { type: "checkbox", name: "critical_breaks_through", checked: q ? q.critical_breaks_through !== false : true, disabled: off });
  const quietFields = h("div", { class: "upload-form-grid notify-quiet" },
    slots.add("subscription.quiet_hours.start", field("Quiet from", start)),
    slots.add("subscription.quiet_hours.end", field("Until", end)),
    slots.add("subscription.quiet_hours.time_zone", field("Time zone", zone)),
    h("label", { class: "check" }, breaks, "Critical breaks through"));
  const showQuiet = () => { quietFields.hidden = !quiet.checked; };
  quiet.addEventListener("change", showQuiet);
  showQuiet();

  const element = h("div", { class: "notify-subscription" },
    h("fieldset", { class: "checks notify-events" }, h("legend", {}, "Events"), events.boxes,
      slots.add("subscription.events", field("Other event kinds or patterns", others, "Comma-separated; “health.*” matches every health event."))),
    h("details", { class: "notify-health-kinds", open: (s.health_kinds ?? []).length > 0 },
      h("summary", {}, "Health kinds (none ticked: every kind)"),
      h("fieldset", { class: "checks notify-events" }, h("legend", {}, "Health kinds"), health.boxes,
        slots.add("subscription.health_kinds", field("Other health kinds", otherHealth, "Comma-separated.")))),
    h("div", { class: "upload-form-grid" }, slots.add("subscription.min_severity", field("Minimum severity", severity))),
    slots.add("subscription.sites", h("fieldset", { class: "checks notify-sites" }, h("legend", {}, "Sites (none ticked: every site the channel covers)"),
      siteBoxes.length ? siteBoxes : h("span", { class: "hint" }, "No sites to choose from."))),
    slots.add("subscription.quiet_hours", h("fieldset", { class: "notify-quiet-box" }, h("legend", {}, "Quiet hours"),
      h("label", { class: "check" }, quiet, "Hold notifications during quiet hours (sent when they end)"), quietFields)));
  const value = () => ({
    events: events.chosen().concat(splitList(others.value)),
    health_kinds: health.chosen().concat(splitList(otherHealth.value)),
    sites: [...element.querySelectorAll("input[name=site]:checked")].map((b) => b.value),
    min_severity: severity.value,
    quiet_hours: quiet.checked ? { start: start.value, end: end.value, time_zone: zone.value, critical_breaks_through: breaks.checked } : null,
  });
  return { element, value };
}

/** The editor as its own form on a channel's page, saved with PATCH {subscription, version}. */
export function subscriptionForm(channel, { kinds, sites, manage, onSaved }) {
  const slots = fieldProblems();
  const editor = subscriptionEditor(channel.subscription, { kinds, sites, slots, off: !manage });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "upload-policy-form notify-subscription-form", "aria-label": "Subscription", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    slots.mark({});
    try {
      const { data } = await api(channelUrl(channel.id), { method: "PATCH", body: { subscription: editor.value(), version: channel.version } });
      notify(`Subscription of “${data.name}” saved.`);
      onSaved(data);
    } catch (err) {
      const left = slots.mark(err.detail?.fields ?? {});
      error.textContent = err.status === 400 ? `Not saved: ${left.length ? left.join("; ") : "see the fields marked."}`
        : err.status === 409 ? `Not saved: the channel was changed meanwhile; reload to see it. (${err.message})` : `Not saved: ${err.message}`;
      form.querySelector("[aria-invalid=true]")?.focus();
    }
  } },
  editor.element,
  manage ? h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Save subscription")) : null,
  error);
  return form;
}

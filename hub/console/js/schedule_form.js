// Create or edit a schedule: targets, time zone (the site's unless chosen), when (see schedule_when.js),
// what it records (profile, channel map, metadata, tags), what to do on a clash; the next occurrences
// previewed live beside it; a 409 `schedule_conflict` shown with its clashes and a way to save anyway.
import { api, can, listAll } from "./api.js";
import { field, fill, h, notify, select } from "./dom.js";
import { CONFLICT_WORDS, SCHEDULES, problemSlots, scheduleUrl, utcToWall } from "./schedule_rules.js";
import { showConflicts } from "./schedule_conflicts.js";
import { schedulePreview } from "./schedule_preview.js";
import { targetEditor } from "./schedule_targets.js";
import { whenEditor } from "./schedule_when.js";

const listFromText = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);
const browserZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function timeZones(current) {
  let zones = [];
  try { zones = Intl.supportedValuesOf("timeZone"); } catch { zones = []; }
  const all = new Set(["UTC", ...zones]);
  if (current) all.add(current);
  return [...all];
}

/** A typed value from a text box: numbers, true/false/null and JSON stay typed; anything else is text. */
function parseValue(text) {
  const trimmed = text.trim();
  if (/^(-?\d+(\.\d+)?|true|false|null|\{.*\}|\[.*\]|".*")$/s.test(trimmed)) {
    try { return JSON.parse(trimmed); } catch { /* plain text */ }
  }
  return text;
}

function metadataEditor(initial) {
  const list = h("div", { class: "kv-list" });
  const addRow = (key = "", value = "") => {
    const keyInput = h("input", { value: key, name: "meta_key", "aria-label": "Metadata key", maxLength: 100 });
    const valueInput = h("input", { value, name: "meta_value", "aria-label": `Value${key ? ` of ${key}` : ""}` });
    const row = h("div", { class: "kv" }, keyInput, valueInput,
      h("button", { type: "button", class: "small", "aria-label": `Remove ${key || "this entry"}`, onclick: () => row.remove() }, "Remove"));
    list.append(row);
    return keyInput;
  };
  for (const [k, v] of Object.entries(initial ?? {})) addRow(k, typeof v === "string" ? v : JSON.stringify(v));
  const element = h("fieldset", { class: "schedule-metadata" }, h("legend", {}, "Metadata on each recording"), list,
    h("button", { type: "button", class: "small", onclick: () => addRow().focus() }, "Add metadata"));
  const value = () => Object.fromEntries([...list.querySelectorAll(".kv")]
    .map((row) => row.querySelectorAll("input")).filter(([k]) => k.value.trim()).map(([k, v]) => [k.value.trim(), parseValue(v.value)]));
  return { element, value };
}

async function optional(promise, fallback) {
  try { return await promise; } catch { return fallback; }
}

export function renderScheduleNew(view) {
  return renderScheduleForm(view, null);
}

export function renderScheduleEdit(view, id) {
  return renderScheduleForm(view, id);
}

function renderScheduleForm(view, id) {
  let gone = false;
  let preview = null;
  const heading = h("h2", {}, id ? "Edit schedule" : "New schedule");
  const error = h("p", { class: "error", role: "alert" });
  fill(view, h("section", { class: "schedule-edit" }, h("div", { class: "title-row" }, heading,
    h("a", { href: id ? `#/schedules/${encodeURIComponent(id)}` : "#/schedules" }, id ? "Back to the schedule" : "All schedules")), error,
  h("p", { class: "hint", role: "status" }, "Loading…")));

  (async () => {
    let schedule = null;
    let nodes;
    let sites;
    let profiles;
    let templates;
    try {
      [schedule, nodes, sites, profiles, templates] = await Promise.all([
        id ? api(scheduleUrl(id)).then((b) => b.data) : null,
        can("node:read") ? optional(listAll("/api/v1/nodes"), null) : null,
        optional(listAll("/api/v1/sites"), []),
        optional(listAll("/api/v1/settings/recording-profiles"), null),
        optional(listAll("/api/v1/settings/channel-map-templates"), []),
      ]);
    } catch (err) {
      error.textContent = err.status === 404 ? "There is no such schedule, or it is not in your sites." : `Could not load the schedule: ${err.message}`;
      view.querySelector("[role=status]")?.remove();
      return;
    }
    if (gone) return;
    nodes = nodes?.sort((a, b) => a.name.localeCompare(b.name)) ?? null;
    const siteRows = new Map(sites.map((s) => [s.id, s]));
    const names = new Map((nodes ?? []).map((n) => [n.id, n.name]));
    const slots = problemSlots();
    const changed = () => { zoneDefault(); preview?.update(); };

    const name = h("input", { name: "name", autocomplete: "off", maxLength: 100, required: true });
    const description = h("input", { name: "description", autocomplete: "off", maxLength: 2000 });
    const enabled = h("input", { type: "checkbox", name: "enabled", checked: true });
    const targets = targetEditor({ nodes, sites, slots, onChange: changed });
    let zoneTouched = Boolean(schedule);
    const zone = select(timeZones(schedule?.time_zone).map((z) => [z, z]), schedule?.time_zone ?? browserZone(), { name: "time_zone" });
    const zoneHint = h("small", { class: "hint" });
    const zoneField = slots.add("time_zone", field("Time zone", zone));
    zoneField.append(zoneHint);
    zone.addEventListener("change", () => { zoneTouched = true; zoneDefault(); });
    const when = whenEditor({ slots, onChange: () => preview?.update() });
    const profile = profiles
      ? select(profiles.map((p) => [p.id, p.name && p.name !== p.id ? `${p.name} (${p.id})` : p.id]), "default", { name: "profile_id" })
      : h("input", { name: "profile_id", value: "default", autocomplete: "off", spellcheck: "false" });
    const channelMap = select([["", "The node's own"], ...templates.map((t) => [t.id, `${t.name} (v${t.version})`])], "", { name: "channel_map_id" });
    const metadata = metadataEditor(schedule?.metadata);
    const tags = h("input", { name: "tags", autocomplete: "off", spellcheck: "false", placeholder: "e.g. birds, dawn" });
    const onConflict = select(Object.entries(CONFLICT_WORDS), "reject", { name: "on_conflict" });
    const conflictBox = h("section", { class: "schedule-conflicts", "aria-labelledby": "schedule-conflict-h", hidden: true });
    const submit = h("button", { type: "submit", class: "primary" }, id ? "Save schedule" : "Create schedule");

    function zoneDefault() {
      const siteId = targets.site();
      const site = siteId ? siteRows.get(siteId) : null;
      if (!zoneTouched && site?.time_zone) {
        if (![...zone.options].some((o) => o.value === site.time_zone)) zone.append(h("option", { value: site.time_zone }, site.time_zone));
        zone.value = site.time_zone;
      }
      zoneHint.textContent = site
        ? `${site.name ?? site.id}'s zone is ${site.time_zone}${zone.value === site.time_zone ? "" : `; this schedule runs in ${zone.value}`}.`
        : "Its nodes are on several sites or none: choose the zone its times are in.";
    }

    if (schedule) {
      name.value = schedule.name;
      description.value = schedule.description ?? "";
      enabled.checked = schedule.enabled;
      targets.set(schedule.target);
      when.set(schedule, schedule.time_zone);
      if (profiles && ![...profile.options].some((o) => o.value === schedule.profile_id)) profile.append(h("option", { value: schedule.profile_id }, schedule.profile_id));
      profile.value = schedule.profile_id;
      if (schedule.channel_map_id && ![...channelMap.options].some((o) => o.value === schedule.channel_map_id)) channelMap.append(h("option", { value: schedule.channel_map_id }, schedule.channel_map_id));
      channelMap.value = schedule.channel_map_id ?? "";
      tags.value = (schedule.tags ?? []).join(", ");
      onConflict.value = schedule.on_conflict ?? "reject";
      heading.textContent = `Edit ${schedule.name}`;
    } else {
      // Tomorrow at 09:00 at the site, for one hour: a start that previews at once.
      const tomorrow = utcToWall(new Date(Date.now() + 86400e3).toISOString(), zone.value).slice(0, 10);
      when.set({ start_local: `${tomorrow}T09:00:00`, duration_s: 3600, rrule: null }, zone.value);
    }

    const body = () => ({
      name: name.value.trim(), description: description.value.trim(), enabled: enabled.checked,
      target: targets.value(), time_zone: zone.value,
      ...when.value(zone.value),
      profile_id: profile.value.trim() || "default", channel_map_id: channelMap.value || null,
      metadata: metadata.value(), tags: listFromText(tags.value), on_conflict: onConflict.value,
    });
    preview = schedulePreview({
      body: () => {
        const value = body();
        if (!value.start_local) return { value: null, reason: "Choose when it starts to see its next occurrences." };
        return { value, zone: value.time_zone };
      },
      onFields: (fields) => slots.mark(fields),
      onExcept: (local) => when.addException(local),
    });

    const save = async (resolution = null) => {
      error.textContent = "";
      conflictBox.hidden = true;
      if (resolution) onConflict.value = resolution;
      const value = body();
      if (!value.name) { error.textContent = "Name the schedule, e.g. what and where it records."; name.focus(); return; }
      if (!value.start_local) { error.textContent = "Choose when it starts."; view.querySelector("input[name=start_local]").focus(); return; }
      submit.disabled = true;
      try {
        const saved = schedule
          ? (await api(scheduleUrl(schedule.id), { method: "PATCH", body: { ...value, version: schedule.version } })).data
          : (await api(SCHEDULES, { method: "POST", body: value })).data;
        notify(`Schedule ${saved.name} ${schedule ? "saved" : "created"}.`);
        location.hash = `#/schedules/${encodeURIComponent(saved.id)}`;
      } catch (err) {
        if (err.code === "schedule_conflict") {
          showConflicts(conflictBox, err.detail, { zone: value.time_zone, names, resolve: (how) => save(how) });
        } else if (err.status === 409) {
          error.textContent = `Not saved: ${err.message} Open the schedule again to see the change, then edit it.`;
        } else {
          slots.reveal();
          const left = err.detail?.fields ? slots.mark(err.detail.fields) : [];
          error.textContent = err.detail?.fields
            ? `Not saved: ${err.detail.message ?? "some fields need fixing"}${left.length ? ` (${left.map((k) => `${k}: ${err.detail.fields[k]}`).join("; ")})` : ""}.`
            : `Not saved: ${err.message}`;
        }
      } finally { submit.disabled = false; }
    };

    const form = h("form", { class: "schedule-form", noValidate: true, "aria-label": "Schedule", onsubmit: (event) => { event.preventDefault(); save(); } },
      h("div", { class: "schedule-grid" }, slots.add("name", field("Name", name)), slots.add("description", field("Description", description)),
        h("label", { class: "check schedule-enabled" }, enabled, "Enabled")),
      targets.element,
      zoneField,
      when.element,
      h("fieldset", { class: "schedule-what" }, h("legend", {}, "What it records"),
        h("div", { class: "schedule-grid" }, slots.add("profile_id", field("Recording profile", profile)),
          slots.add("channel_map_id", field("Channel map", channelMap)),
          slots.add("tags", field("Schedule tags", tags, "Comma-separated; copied onto each recording."))),
        slots.add("metadata", metadata.element, null)),
      slots.add("on_conflict", field("When it clashes", onConflict, "With another enabled schedule on the same node, in the next 31 days.")),
      conflictBox, error,
      h("div", { class: "button-row" }, submit, h("a", { class: "button", href: id ? `#/schedules/${encodeURIComponent(id)}` : "#/schedules" }, "Cancel")));
    fill(view, h("section", { class: "schedule-edit" },
      h("div", { class: "title-row" }, heading, h("a", { href: id ? `#/schedules/${encodeURIComponent(id)}` : "#/schedules" }, id ? "Back to the schedule" : "All schedules")),
      h("div", { class: "schedule-layout" }, form, preview.element)));
    zoneDefault();
    preview.update(true);
    name.focus();
  })();
  return () => { gone = true; preview?.stop(); };
}

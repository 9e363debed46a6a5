// Sites: where nodes stand. The list shows each site's time zone and the time there now, its
// location (with a map link), who may see it, its nodes and its admins; a dialog creates or edits a
// site, another manages the users approved to see it, and deleting names what stands in the way.
import { api, can, listAll } from "./api.js";
import { confirmAction, field, fill, h, notify, select, timeEl } from "./dom.js";
import { plural } from "./words.js";

const SITES = "/api/v1/sites";
const CLOCK_MS = 30000;
const VISIBILITY_WORDS = { public: "public", approved: "approved users", admin_only: "admins only" };
const VISIBILITY_HINTS = {
  public: "Everyone whose roles reach this site sees it.",
  approved: "Only full admins, this site's admins and the users approved below see it.",
  admin_only: "Only full admins and this site's admins see it.",
};

const chip = (visibility) => h("span", { class: `state site-visibility-${visibility}` }, VISIBILITY_WORDS[visibility] ?? visibility);
const siteUrl = (id) => `${SITES}/${encodeURIComponent(id)}`;

/** Every IANA zone the browser knows (UTC first), with `current` kept even if the browser lacks it. */
function timeZones(current) {
  let zones = [];
  try { zones = Intl.supportedValuesOf("timeZone"); } catch { zones = []; }
  const all = new Set(["UTC", ...zones]);
  if (current) all.add(current);
  return [...all];
}

/** The time at the site now, in its own zone (refreshed with the list's clock). */
const localNow = (site) => h("span", { class: "site-clock", dataset: { zone: site.time_zone } },
  timeEl(new Date().toISOString(), { zone: site.time_zone, seconds: false }));

function location(site) {
  if (site.latitude === null || site.longitude === null) return h("span", { class: "hint" }, "not set");
  const lat = site.latitude.toFixed(4);
  const lon = site.longitude.toFixed(4);
  const map = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`;
  return h("span", {}, `${lat}, ${lon}`, site.elevation_m === null ? null : ` · ${Math.round(site.elevation_m)} m`, " ",
    h("a", { href: map, target: "_blank", rel: "noopener noreferrer", "aria-label": `Map of ${site.name}` }, "map"));
}

const number = (value) => (value === "" ? null : Number(value));

/** The create/edit dialog; resolves when closed. `site` null: a new site. */
function editSite(site, opener, onSaved) {
  const dialog = h("dialog", { class: "site-editor", "aria-labelledby": "site-editor-title" });
  const error = h("p", { class: "error", role: "alert" });
  const id = h("input", { name: "id", required: true, autocomplete: "off", spellcheck: "false", maxLength: 100, value: site?.id ?? "", disabled: Boolean(site) });
  const name = h("input", { name: "name", autocomplete: "off", maxLength: 200, value: site?.name ?? "" });
  const zone = select(timeZones(site?.time_zone).map((z) => [z, z]), site?.time_zone ?? (Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"), { name: "time_zone" });
  const coordinate = (label, value, min, max) => h("input", { name: label, type: "number", step: "any", min, max, value: value ?? "" });
  const latitude = coordinate("latitude", site?.latitude, -90, 90);
  const longitude = coordinate("longitude", site?.longitude, -180, 180);
  const elevation = coordinate("elevation_m", site?.elevation_m, -500, 9000);
  const visibility = select(Object.entries(VISIBILITY_WORDS), site?.visibility ?? "public", { name: "visibility" });
  const visibilityField = field("Who sees it", visibility, VISIBILITY_HINTS[visibility.value]);
  visibility.addEventListener("change", () => { visibilityField.querySelector(".hint").textContent = VISIBILITY_HINTS[visibility.value]; });
  const notes = h("textarea", { name: "notes", rows: 3, maxLength: 2000 }, site?.notes ?? "");
  const close = () => { dialog.close(); dialog.remove(); if (opener?.isConnected) opener.focus(); };
  const form = h("form", { class: "site-form", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    const body = {
      name: name.value.trim() || (site ? site.name : id.value.trim()),
      time_zone: zone.value,
      latitude: number(latitude.value), longitude: number(longitude.value), elevation_m: number(elevation.value),
      visibility: visibility.value, notes: notes.value,
    };
    if (!site && !id.value.trim()) { error.textContent = "Give the site an id, e.g. north-hall: nodes and grants name it."; id.focus(); return; }
    const save = event.submitter;
    if (save) save.disabled = true;
    try {
      const saved = site
        ? (await api(siteUrl(site.id), { method: "PATCH", body: { ...body, version: site.version } })).data
        : (await api(SITES, { method: "POST", body: { id: id.value.trim(), ...body } })).data;
      close();
      notify(`Site ${saved.name} ${site ? "saved" : "created"}.`);
      onSaved();
    } catch (err) {
      error.textContent = err.status === 409 && site
        ? "Someone changed this site meanwhile: close this dialog and open it again to see their change."
        : `Not saved: ${err.message}`;
    } finally { if (save) save.disabled = false; }
  } },
  field("Id", id, site ? "The id nodes and grants name; it cannot change." : "Letters, digits, _ . - (e.g. north-hall)."),
  field("Name", name), field("Time zone", zone, "Schedules and local times at the site use it."),
  h("fieldset", { class: "site-location" }, h("legend", {}, "Location (optional)"),
    field("Latitude", latitude, "-90 to 90"), field("Longitude", longitude, "-180 to 180"), field("Elevation (m)", elevation)),
  visibilityField,
  field("Notes", notes),
  error,
  h("div", { class: "buttons" }, h("button", { type: "button", onclick: close }, "Cancel"), h("button", { type: "submit", class: "primary" }, site ? "Save site" : "Create site")));
  fill(dialog, h("h2", { id: "site-editor-title" }, site ? `Edit ${site.name}` : "New site"), form);
  dialog.addEventListener("cancel", (event) => { event.preventDefault(); close(); });
  document.body.append(dialog);
  dialog.showModal();
  (site ? name : id).focus();
}

/** The users approved to see a site (its visibility `approved`): list, add, remove. */
async function manageApproved(site, opener, onChanged) {
  const dialog = h("dialog", { class: "site-editor", "aria-labelledby": "approved-title" });
  const list = h("ul", { class: "approved-list" });
  const error = h("p", { class: "error", role: "alert" });
  const close = () => { dialog.close(); dialog.remove(); if (opener?.isConnected) opener.focus(); onChanged(); };
  let picker = h("input", { name: "user_id", autocomplete: "off", spellcheck: "false", placeholder: "usr_…" });
  if (can("auth:manage")) {
    try {
      const users = await listAll("/api/v1/auth/users");
      picker = select([["", "Choose a user"], ...users.map((u) => [u.id, u.display_name ? `${u.username} (${u.display_name})` : u.username])], "", { name: "user_id" });
    } catch { /* fall back to typing the id */ }
  }
  const show = async () => {
    try {
      const detail = (await api(siteUrl(site.id))).data;
      fill(list, detail.approved_users.length ? detail.approved_users.map((u) => h("li", {},
        h("span", {}, u.username, " · approved ", timeEl(u.approved_at)),
        h("button", { type: "button", class: "small", "aria-label": `Remove ${u.username}`, onclick: async () => {
          try {
            await api(`${siteUrl(site.id)}/approved-users/${encodeURIComponent(u.id)}`, { method: "DELETE" });
            notify(`${u.username} no longer approved for ${site.name}.`);
            show();
          } catch (err) { error.textContent = err.message; }
        } }, "Remove"))) : h("li", { class: "hint" }, "No user is approved yet."));
    } catch (err) { error.textContent = `Could not load the approved users: ${err.message}`; }
  };
  const form = h("form", { class: "approve-form", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    const userId = picker.value.trim();
    if (!userId) { error.textContent = "Choose the user to approve."; picker.focus(); return; }
    try {
      await api(`${siteUrl(site.id)}/approved-users`, { method: "POST", body: { user_id: userId } });
      picker.value = "";
      show();
    } catch (err) { error.textContent = `Not approved: ${err.message}`; }
  } }, field("User", picker), h("button", { type: "submit", class: "primary" }, "Approve"));
  fill(dialog, h("h2", { id: "approved-title" }, `Approved users of ${site.name}`),
    h("p", { class: "hint" }, site.visibility === "approved"
      ? VISIBILITY_HINTS.approved
      : `This site is ${VISIBILITY_WORDS[site.visibility]}: approvals count once its visibility is “approved users”.`),
    list, can("site:manage") ? form : null, error,
    h("div", { class: "buttons" }, h("button", { type: "button", onclick: close }, "Close")));
  dialog.addEventListener("cancel", (event) => { event.preventDefault(); close(); });
  document.body.append(dialog);
  dialog.showModal();
  show();
}

/** Delete a site: plainly when nothing stands in the way, else list the blockers and offer force. */
async function deleteSite(site, onDeleted) {
  let preview;
  try {
    preview = (await api(`${siteUrl(site.id)}/delete-preview`)).data;
  } catch (err) { notify(`${site.name}: ${err.message}`, "error"); return; }
  if (!preview.requires_force) {
    if (!(await confirmAction(`Delete ${site.name}?`, "No node stands on it and no grant names it.", "Delete", true))) return;
  } else {
    const named = (items, label) => items.map((item) => `${label} ${item.name ?? item.username} (${item.id})`);
    const { blockers, counts } = preview;
    const lines = [...named(blockers.nodes, "node"), ...named(blockers.users, "user"), ...named(blockers.groups, "group"), ...named(blockers.api_keys, "API key")];
    const more = Object.values(counts).reduce((a, b) => a + b, 0) - lines.length;
    const confirmed = await new Promise((resolve) => {
      const dialog = h("dialog", { class: "site-editor", "aria-labelledby": "site-delete-title" });
      const done = (ok) => { dialog.close(); dialog.remove(); resolve(ok); };
      const cancel = h("button", { type: "button", onclick: () => done(false) }, "Cancel");
      fill(dialog, h("h2", { id: "site-delete-title" }, `Delete ${site.name}?`),
        h("p", {}, `In the way: ${preview.reasons.join("; ")}.`),
        h("ul", { class: "site-blockers" }, lines.map((line) => h("li", {}, line)), more > 0 ? h("li", {}, `and ${more} more`) : null),
        h("p", {}, "Deleting anyway detaches those nodes (they keep running, with no site) and takes the site out of those grants."),
        h("div", { class: "buttons" }, cancel, h("button", { type: "button", class: "danger", onclick: () => done(true) }, "Delete anyway")));
      dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(false); });
      document.body.append(dialog);
      dialog.showModal();
      cancel.focus();
    });
    if (!confirmed) return;
  }
  try {
    await api(siteUrl(site.id), { method: "DELETE", params: preview.requires_force ? { force: "true" } : {} });
    notify(`Site ${site.name} deleted.`);
    onDeleted();
  } catch (err) { notify(`${site.name}: ${err.message}`, "error"); }
}

export function renderSites(view) {
  const tbody = h("tbody");
  const caption = h("caption", {}, "Loading…");
  const visibility = select([["", "Any"], ...Object.entries(VISIBILITY_WORDS)], "", { name: "visibility" });
  const q = h("input", { type: "search", name: "q", placeholder: "id, name or notes" });
  const error = h("p", { class: "error", role: "alert" });
  let gone = false;

  const admins = async (site, cell) => {
    try {
      const detail = (await api(siteUrl(site.id))).data;
      if (gone) return;
      fill(cell, detail.admins.length ? detail.admins.map((a) => a.display_name || a.username).join(", ") : h("span", { class: "hint" }, "full admins only"));
    } catch { fill(cell, "—"); }
  };

  const row = (site) => {
    const adminCell = h("td", { class: "col-admins" }, "…");
    admins(site, adminCell);
    const manage = can("site:manage");
    return h("tr", { dataset: { site: site.id } },
      h("td", {}, h("strong", {}, site.name), site.name !== site.id ? h("div", { class: "hint" }, site.id) : null,
        site.notes ? h("div", { class: "site-notes" }, site.notes) : null),
      h("td", { class: "col-zone" }, site.time_zone),
      h("td", { class: "col-clock" }, localNow(site)),
      h("td", { class: "col-location" }, location(site)),
      h("td", {}, chip(site.visibility)),
      h("td", { class: "col-nodes" }, site.node_count ? h("a", { href: `#/fleet?site=${encodeURIComponent(site.id)}` }, plural(site.node_count, "node")) : "none"),
      adminCell,
      h("td", { class: "actions" },
        manage ? h("button", { type: "button", class: "small", onclick: (e) => editSite(site, e.currentTarget, load) }, "Edit") : null,
        h("button", { type: "button", class: "small", onclick: (e) => manageApproved(site, e.currentTarget, load) }, "Approved users"),
        manage ? h("button", { type: "button", class: "small danger", onclick: () => deleteSite(site, load) }, "Delete") : null));
  };

  const load = async () => {
    try {
      const sites = await listAll(SITES, { visibility: visibility.value, q: q.value.trim() });
      if (gone) return;
      caption.textContent = sites.length ? `${plural(sites.length, "site")}, by id` : "No site matches.";
      fill(tbody, sites.length ? sites.map(row) : h("tr", {}, h("td", { colSpan: 8 }, "No sites yet.")));
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the sites: ${err.message}`; }
  };
  visibility.addEventListener("change", load);
  const clock = setInterval(() => {
    for (const cell of tbody.querySelectorAll(".site-clock")) {
      fill(cell, timeEl(new Date().toISOString(), { zone: cell.dataset.zone, seconds: false }));
    }
  }, CLOCK_MS);

  fill(view, h("section", { class: "sites" },
    h("div", { class: "title-row" }, h("h2", {}, "Sites"),
      can("site:manage") ? h("button", { type: "button", class: "primary", onclick: (e) => editSite(null, e.currentTarget, load) }, "New site") : null),
    h("form", { class: "filters", role: "search", "aria-label": "Filter sites", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Who sees it", visibility), field("Search", q), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "site-table" }, caption,
      h("thead", {}, h("tr", {}, [["Site"], ["Time zone", "col-zone"], ["Local time", "col-clock"], ["Location", "col-location"],
        ["Who sees it"], ["Nodes", "col-nodes"], ["Admins", "col-admins"], ["Actions", "actions"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody))));
  load();
  return () => { gone = true; clearInterval(clock); };
}

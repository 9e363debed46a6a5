// Who am I (and where times are shown); users (auth:manage) with their roles, sites and groups; API keys
// (everyone's own; every key with auth:manage).
import { api, can, listAll, session } from "./api.js";
import { confirmAction, field, fill, h, notify, secretBox, select, setZonePreference, timeEl, when, zonePreference } from "./dom.js";
import { plural } from "./words.js";

const PERMISSIONS = ["auth:manage", "audit:read", "node:read", "node:manage", "listen:monitor", "listen:manage", "health:read", "health:acknowledge", "recording:read",
  "recording:read_own", "recording:create", "recording:control", "recording:playback", "recording:download", "recording:edit", "recording:delete", "recording:share",
  "schedule:read", "schedule:manage", "settings:read", "settings:manage", "notify:read", "notify:manage", "site:read", "site:manage", "metrics:read"];

const sitesText = (sites) => (sites === null || sites === undefined ? "all sites" : sites.join(", ") || "no site");
const parseSites = (text) => (text.trim() ? text.split(",").map((s) => s.trim()).filter(Boolean) : null);

function checkboxes(name, values, checked = [], legend) {
  return h("fieldset", { class: "checks" }, h("legend", {}, legend), values.map((value) => {
    const id = `${name}-${value.replace(/\W/g, "-")}`;
    return h("span", { class: "check" }, h("input", { type: "checkbox", id, name, value, checked: checked.includes(value) }), h("label", { for: id }, value));
  }));
}
const checkedValues = (form, name) => [...form.querySelectorAll(`input[name="${name}"]:checked`)].map((i) => i.value);

export function renderMe(view) {
  const me = session.me;
  const sessions = h("div");
  fill(view, h("section", {}, h("h2", {}, "Who am I"),
    h("dl", { class: "facts" }, [["User", me.user.username], ["Name", me.user.display_name ?? "—"], ["Roles", me.user.roles.join(", ") || "none"],
      ["Sites", sitesText(me.user.sites)], ["Signed in with", me.via], ["Permissions", me.permissions.join(", ") || "none"]]
      .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h3", {}, "Settings"), zoneSetting(() => { renderMe(view); view.querySelector("input[name=time-zone]:checked")?.focus(); }),
    h("h3", {}, "Your sessions"), sessions));
  const load = async () => {
    try {
      const { data } = await api("/api/v1/auth/sessions");
      fill(sessions, h("div", { class: "table-wrap" }, h("table", {}, h("caption", {}, plural(data.length, "session")),
        h("thead", {}, h("tr", {}, ["Started", "Last used", "From", "Browser", ""].map((t) => h("th", { scope: "col", class: t === "Browser" ? "col-agent" : null }, t)))),
        h("tbody", {}, data.map((s) => h("tr", {}, h("td", {}, timeEl(s.created_at)), h("td", {}, timeEl(s.last_seen_at ?? s.last_used_at)), h("td", {}, s.source_ip ?? "—"),
          h("td", { class: "col-agent" }, s.user_agent ?? "—"), h("td", {}, s.current ? "this session" : h("button", { type: "button", class: "small", onclick: async () => {
            try { await api(`/api/v1/auth/sessions/${s.id}`, { method: "DELETE" }); load(); } catch (err) { notify(`Could not end the session: ${err.message}`, "error"); }
          } }, "End"))))))));
    } catch (err) { fill(sessions, h("p", { class: "error" }, `Could not load your sessions: ${err.message}`)); }
  };
  load();
}

/** "Show times in": the browser's zone or UTC, kept in this browser; `changed` re-renders. */
function zoneSetting(changed) {
  const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "unknown";
  const current = zonePreference();
  const choice = (value, label) => {
    const id = `time-zone-${value}`;
    return h("span", { class: "check" }, h("input", { type: "radio", name: "time-zone", id, value, checked: current === value, onchange: () => {
      setZonePreference(value);
      changed();
    } }), h("label", { for: id }, label));
  };
  return h("fieldset", { class: "checks zone-setting" }, h("legend", {}, "Show times in"),
    choice("local", `my browser's zone (${browserZone})`), choice("UTC", "UTC"),
    h("small", { class: "hint" }, `Now: ${when(new Date().toISOString())}. Kept in this browser.`));
}

const isoish = (v) => typeof v === "string" && v.trim() !== "";
const siteList = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

export function renderUsers(view) {
  const list = h("div");
  const error = h("p", { class: "error", role: "alert" });
  const myId = session.me?.user?.id;
  let roles = ["admin", "operator", "technician", "viewer"];
  let groups = null; // null: the groups could not be read, so an edit leaves memberships alone
  let knownSites = [];
  const load = async () => {
    try {
      const [users, roleList, groupList, facets] = await Promise.all([
        listAll("/api/v1/auth/users"),
        api("/api/v1/auth/roles", { params: { limit: 200 } }).catch(() => null),
        api("/api/v1/auth/groups", { params: { limit: 200 } }).catch(() => null),
        can("node:read") ? api("/api/v1/nodes/facets", { params: { fields: "site" } }).catch(() => null) : null,
      ]);
      if (roleList) roles = roleList.data.map((r) => r.name);
      if (groupList) groups = groupList.data;
      const sites = new Set((facets?.data?.site ?? []).map((v) => v.value).filter(isoish));
      for (const u of users) for (const site of u.sites ?? []) sites.add(site);
      for (const g of groups ?? []) for (const site of g.sites ?? []) sites.add(site);
      knownSites = [...sites].sort((a, b) => a.localeCompare(b));
      fill(list, h("div", { class: "table-wrap" }, h("table", { class: "users-table" }, h("caption", {}, plural(users.length, "user")),
        h("thead", {}, h("tr", {}, ["User", "Roles", "Sites", "State", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, users.map(userRow)))));
      fill(newRoles, checkboxes("roles", roles, ["viewer"], "Roles"));
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the users: ${err.message}`; }
  };
  const groupNames = (ids) => ids.map((id) => groups?.find((g) => g.id === id)?.name ?? id);
  const userRow = (u) => {
    const mine = u.id === myId;
    const act = async (what, call) => {
      try { await call(); notify(`${u.username}: ${what}.`); load(); } catch (err) { notify(`${u.username}: ${err.message}`, "error"); }
    };
    return h("tr", { dataset: { userId: u.id, username: u.username } },
      h("td", {}, u.username, u.display_name ? ` (${u.display_name})` : "", mine ? h("span", { class: "hint" }, " — you") : null),
      h("td", { class: "col-roles" }, [...u.roles].sort().join(", ") || "none",
        u.groups?.length ? h("div", { class: "hint" }, `groups: ${groupNames(u.groups).join(", ")}`) : null),
      h("td", {}, sitesText(u.sites)),
      h("td", {}, u.disabled ? "disabled" : "active", u.sso ? ", single sign-on" : ""), h("td", {}, timeEl(u.created_at)),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "small", "aria-label": `Edit access of ${u.username}`, onclick: (event) => editAccess(u, event.currentTarget) }, "Edit access"),
        mine ? null : h("button", { type: "button", class: "small", onclick: async () => {
          if (!(await confirmAction(`${u.disabled ? "Enable" : "Disable"} ${u.username}?`, u.disabled ? "They can sign in again." : "Their sessions end and their API keys stop working.", u.disabled ? "Enable" : "Disable", !u.disabled))) return;
          act(u.disabled ? "enabled" : "disabled", () => api(`/api/v1/auth/users/${u.id}/status`, { method: "PATCH", body: { status: u.disabled ? "active" : "disabled" } }));
        } }, u.disabled ? "Enable" : "Disable"),
        u.sso ? null : h("button", { type: "button", class: "small", onclick: async () => {
          const password = generatePassword();
          if (!(await confirmAction(`Reset ${u.username}'s password?`, "A new password is generated and shown once; their sessions end.", "Reset", true))) return;
          try {
            await api(`/api/v1/auth/users/${u.id}/password`, { method: "PATCH", body: { password } });
            fill(result, secretBox(`New password for ${u.username}`, password));
          } catch (err) { notify(`${u.username}: ${err.message}`, "error"); }
        } }, "Reset password"),
        mine ? null : h("button", { type: "button", class: "small danger", onclick: async () => {
          if (!(await confirmAction(`Delete ${u.username}?`, "The user is removed and their API keys revoked.", "Delete", true))) return;
          act("deleted", () => api(`/api/v1/auth/users/${u.id}`, { method: "DELETE" }));
        } }, "Delete")));
  };

  // Roles, sites and groups in one dialog, saved together: the API replaces each list, so the
  // dialog always sends the whole of what is ticked (roles the user already has start ticked).
  const editAccess = (u, opener) => {
    const dialog = h("dialog", { class: "access-editor", "aria-labelledby": "access-title" });
    const status = h("p", { class: "error", role: "alert" });
    const everySite = h("input", { type: "radio", name: "site-scope", id: "site-scope-all", value: "all", checked: u.sites === null || u.sites === undefined });
    const someSites = h("input", { type: "radio", name: "site-scope", id: "site-scope-some", value: "some", checked: Array.isArray(u.sites) });
    const siteOptions = [...new Set([...knownSites, ...(u.sites ?? [])])].sort((a, b) => a.localeCompare(b));
    const chosen = h("fieldset", { class: "checks site-choice" }, h("legend", {}, "Chosen sites"),
      siteOptions.length ? siteOptions.map((site, i) => h("span", { class: "check" },
        h("input", { type: "checkbox", name: "access-site", id: `access-site-${i}`, value: site, checked: (u.sites ?? []).includes(site) }),
        h("label", { for: `access-site-${i}` }, site))) : h("span", { class: "hint" }, "No site known yet."),
      field("Other sites", h("input", { name: "other-sites", placeholder: "e.g. north, south" }), "Comma-separated."));
    const syncScope = () => { chosen.disabled = !someSites.checked; };
    everySite.addEventListener("change", syncScope);
    someSites.addEventListener("change", syncScope);
    syncScope();
    const roleBoxes = h("fieldset", { class: "checks" }, h("legend", {}, "Roles"), [...new Set([...roles, ...u.roles])].map((role, i) => h("span", { class: "check" },
      h("input", { type: "checkbox", name: "access-role", id: `access-role-${i}`, value: role, checked: u.roles.includes(role) }),
      h("label", { for: `access-role-${i}` }, role))));
    const groupBoxes = groups?.length ? h("fieldset", { class: "checks" }, h("legend", {}, "Groups"), groups.map((g, i) => h("span", { class: "check" },
      h("input", { type: "checkbox", name: "access-group", id: `access-group-${i}`, value: g.id, checked: (u.groups ?? []).includes(g.id) }),
      h("label", { for: `access-group-${i}` }, g.name)))) : null;
    const close = () => { dialog.close(); dialog.remove(); if (opener?.isConnected) opener.focus(); };
    const form = h("form", { class: "access-form", onsubmit: async (event) => {
      event.preventDefault();
      const body = { roles: checkedValues(form, "access-role") };
      if (everySite.checked) body.sites = null;
      else body.sites = [...new Set([...checkedValues(form, "access-site"), ...siteList(form.elements["other-sites"].value)])];
      if (groups) body.groups = checkedValues(form, "access-group");
      const save = event.submitter;
      if (save) save.disabled = true;
      try {
        await api(`/api/v1/auth/users/${u.id}/access`, { method: "PATCH", body });
        close();
        notify(`${u.username}: access saved (${plural(body.roles.length, "role")}, ${sitesText(body.sites)}).`);
        load();
      } catch (err) {
        status.textContent = `Not saved: ${err.message}`;
      } finally {
        if (save) save.disabled = false;
      }
    } },
    roleBoxes,
    h("fieldset", { class: "checks" }, h("legend", {}, "Sites"),
      h("span", { class: "check" }, everySite, h("label", { for: "site-scope-all" }, "Every site")),
      h("span", { class: "check" }, someSites, h("label", { for: "site-scope-some" }, "Only the chosen sites")),
      chosen,
      h("small", { class: "hint" }, "With no site chosen, the roles reach nothing.")),
    groupBoxes,
    status,
    h("div", { class: "buttons" }, h("button", { type: "button", onclick: close }, "Cancel"), h("button", { type: "submit", class: "primary" }, "Save access")));
    fill(dialog, h("h2", { id: "access-title" }, `Access of ${u.username}`), form);
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); close(); });
    document.body.append(dialog);
    dialog.showModal();
    roleBoxes.querySelector("input")?.focus();
  };

  const result = h("div");
  const newRoles = h("div", { class: "full-row" }, checkboxes("roles", roles, ["viewer"], "Roles"));
  const form = h("form", { class: "grid-form", "aria-label": "New user", onsubmit: async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const password = data.get("password") || generatePassword();
    try {
      const { data: user } = await api("/api/v1/auth/users", { method: "POST", body: {
        username: data.get("username"), password, display_name: data.get("display_name") || null,
        roles: checkedValues(form, "roles"), sites: parseSites(data.get("sites") ?? ""),
      } });
      fill(result, h("p", {}, `User ${user.username} created.`), data.get("password") ? null : secretBox(`Password for ${user.username}`, password));
      form.reset();
      load();
    } catch (err) { fill(result, h("p", { class: "error", role: "alert" }, `Could not create the user: ${err.message}`)); }
  } },
  field("Username", h("input", { name: "username", required: true, autocomplete: "off" })),
  field("Display name", h("input", { name: "display_name" })),
  field("Password", h("input", { name: "password", type: "password", autocomplete: "new-password", minLength: 10 }), "At least 10 characters; leave empty to generate one."),
  field("Sites", h("input", { name: "sites", placeholder: "empty: every site" }), "Comma-separated."),
  newRoles,
  h("button", { type: "submit", class: "primary" }, "Create user"));
  fill(view, h("section", {}, h("h2", {}, "Users"), error, list, h("h3", {}, "New user"), form, result));
  load();
}

export function renderKeys(view) {
  const list = h("div");
  const result = h("div");
  const error = h("p", { class: "error", role: "alert" });
  const admin = can("auth:manage");
  const load = async () => {
    try {
      const keys = await listAll("/api/v1/auth/keys");
      fill(list, keys.length ? h("div", { class: "table-wrap" }, h("table", {}, h("caption", {}, admin ? "Every API key" : "Your API keys"),
        h("thead", {}, h("tr", {}, ["Name", "Kind", "Prefix", "Scopes", "Sites", "Status", "Expires", "Last used", "Actions"]
          .map((t) => h("th", { scope: "col", class: t === "Scopes" ? "col-scopes" : null }, t)))),
        h("tbody", {}, keys.map((k) => h("tr", {}, h("td", {}, k.name), h("td", {}, k.kind), h("td", {}, h("code", {}, k.key_prefix)), h("td", { class: "col-scopes" }, k.scopes.join(", ")),
          h("td", {}, sitesText(k.sites)), h("td", {}, k.status), h("td", {}, k.expires_at ? timeEl(k.expires_at) : "never"), h("td", {}, k.last_used_at ? timeEl(k.last_used_at) : "never"),
          h("td", { class: "actions" }, k.status === "active" ? [
            h("button", { type: "button", class: "small", onclick: async () => {
              if (!(await confirmAction(`Rotate “${k.name}”?`, "A new secret is issued and the old one stops at once.", "Rotate", true))) return;
              try { const { data } = await api(`/api/v1/auth/keys/${k.id}/rotate`, { method: "POST" }); fill(result, secretBox(`New secret of ${k.name}`, data.secret)); load(); } catch (err) { notify(err.message, "error"); }
            } }, "Rotate"),
            h("button", { type: "button", class: "small danger", onclick: async () => {
              if (!(await confirmAction(`Revoke “${k.name}”?`, "The key stops working at once.", "Revoke", true))) return;
              try { await api(`/api/v1/auth/keys/${k.id}`, { method: "DELETE" }); load(); } catch (err) { notify(err.message, "error"); }
            } }, "Revoke")] : "—")))))) : h("p", { class: "hint" }, "No API keys yet."));
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the keys: ${err.message}`; }
  };
  // A key may hold what you hold, and auth:keys (managing keys with that key, as you may from here).
  const mine = [...PERMISSIONS.filter((p) => session.permissions.has(p)), "auth:keys"];
  const form = h("form", { class: "grid-form", "aria-label": "New API key", onsubmit: async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: data.get("name"), scopes: checkedValues(form, "scopes"), kind: data.get("kind") || "user", sites: parseSites(data.get("sites") ?? "") };
    if (data.get("expires_at")) body.expires_at = new Date(data.get("expires_at")).toISOString();
    if (!body.scopes.length) return fill(result, h("p", { class: "error", role: "alert" }, "Choose at least one scope: keys may do nothing else."));
    try {
      const { data: created } = await api("/api/v1/auth/keys", { method: "POST", body });
      fill(result, secretBox(`Secret of ${created.key.name}`, created.secret));
      form.reset();
      load();
    } catch (err) { fill(result, h("p", { class: "error", role: "alert" }, `Could not create the key: ${err.message}`)); }
  } },
  field("Name", h("input", { name: "name", required: true, maxLength: 150 })),
  admin ? field("Kind", select([["user", "user (acts as you)"], ["service", "service"]], "user", { name: "kind" })) : null,
  field("Sites", h("input", { name: "sites", placeholder: "empty: every site you have" }), "Comma-separated."),
  field("Expires", h("input", { name: "expires_at", type: "datetime-local" }), `Empty: never. In your browser's zone (${Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"}).`),
  checkboxes("scopes", mine, [], "Scopes"),
  h("button", { type: "submit", class: "primary" }, "Create key"));
  fill(view, h("section", {}, h("h2", {}, "API keys"), error, list, h("h3", {}, "New key"), form, result));
  load();
}

function generatePassword() {
  const bytes = crypto.getRandomValues(new Uint8Array(15));
  return btoa(String.fromCharCode(...bytes)).replace(/[+/=]/g, "x");
}

// A node's administration on its page: rename, retag and move it, its technician PIN and tokens,
// and deleting it after a preview of what that removes and what stands in the way.
// The node page calls renderNodeAdmin each time it loads the node (every 10 s and on events): the
// panel is built once per slot and later calls only refresh what the user has not started editing,
// so a half-typed form or a token shown once survives the refreshes.
import { api, can } from "./api.js";
import { confirmAction, field, fill, h, notify, secretBox, timeEl, uid } from "./dom.js";
import { blockerLists, forceConsequences, forceWarning } from "./node_delete.js";
import { plural } from "./words.js";

const TAG = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;
const SITE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;
const PIN = /^[0-9]{4,12}$/;
const TOKEN_LIFETIMES = [[3600, "1 hour"], [8 * 3600, "8 hours (a working day)"], [86400, "24 hours"], [7 * 86400, "7 days (the longest)"]];
const panels = new WeakMap(); // slot -> { nodeId, update(node, reload) }

/** Tags from text typed as "roof, west" (commas or spaces); throws an Error in words for a bad tag. */
export function tagsFromText(text) {
  const tags = [...new Set(String(text ?? "").split(/[\s,]+/).filter(Boolean))];
  const bad = tags.filter((t) => !TAG.test(t));
  if (bad.length) {
    throw new Error(`${bad.map((t) => `“${t}”`).join(", ")} cannot be ${bad.length === 1 ? "a tag" : "tags"}: a tag starts with a letter or digit and holds only letters, digits and _ . : - (at most 64 characters).`);
  }
  return tags;
}

/** A site from what was typed (null: none); throws an Error in words for a name the hub refuses. */
export function siteFromText(text) {
  const site = String(text ?? "").trim();
  if (!site) return null;
  if (!SITE.test(site)) {
    throw new Error(`“${site}” cannot be a site name: it starts with a letter or digit and holds only letters, digits and _ . - (no spaces), e.g. ${site.replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "") || "north"}.`);
  }
  return site;
}

let siteCache = null;

/** The sites the fleet's nodes are in (for suggestions), fetched at most once a minute. */
export function knownSites() {
  if (!siteCache || Date.now() - siteCache.at > 60000) {
    const sites = api("/api/v1/nodes/facets", { params: { fields: "site" } })
      .then(({ data }) => (data.site ?? []).map((row) => row.value).filter(Boolean).sort())
      .catch(() => []);
    siteCache = { at: Date.now(), sites };
  }
  return siteCache.sites;
}

/** A labelled site input that suggests the fleet's sites and takes any new name: { el, input }. */
export function siteField(value = "", hint = "Choose a site or type a new one.") {
  const list = h("datalist", { id: uid("sites") });
  const input = h("input", { name: "site", list: list.id, value: value ?? "", autocomplete: "off", maxLength: 200 });
  knownSites().then((sites) => fill(list, sites.map((site) => h("option", { value: site }))));
  const el = field("Site", input, hint);
  el.append(list);
  return { el, input };
}

/** A blocker the delete preview names, as a sentence that says why it matters. */
function blockerText(reason) {
  const text = String(reason);
  if (/^the node is (online|degraded)$/.test(text)) {
    return `The node is ${text.slice(12)}: it is connected now. Deleting it cuts it off at once — its credential stops working and anything it has not uploaded stays on the box.`;
  }
  const open = /^(\d+) open health events?$/.exec(text);
  if (open) return `${plural(Number(open[1]), "open health event")}: problems not yet resolved would be deleted with the node.`;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Fill `slot` with the administration of `node`; `reload()` refreshes the page's node. */
export function renderNodeAdmin(slot, node, { reload } = {}) {
  const allowed = node && can("node:manage") && node.actions?.update?.allowed !== false;
  const panel = panels.get(slot);
  if (!allowed) {
    panels.delete(slot);
    fill(slot);
    return;
  }
  if (panel && panel.nodeId === node.id) {
    panel.update(node, reload);
    return;
  }
  panels.set(slot, buildPanel(slot, node, reload));
}

function buildPanel(slot, first, firstReload) {
  let node = first;
  let reload = firstReload;
  const nodePath = () => `/api/v1/nodes/${encodeURIComponent(node.id)}`;
  const refresh = () => { try { reload?.(); } catch { /* the page's own error line reports it */ } };

  // -- name, tags and site ---------------------------------------------------------------
  const name = h("input", { name: "name", maxLength: 200, autocomplete: "off" });
  const tags = h("input", { name: "tags", autocomplete: "off", spellcheck: "false", placeholder: "e.g. roof, west" });
  const site = siteField("", "Choose a site or type a new one; empty: no site.");
  const detailsStatus = h("p", { role: "status", class: "ok" });
  const detailsError = h("p", { role: "alert", class: "error" });
  let shown = {};
  // Values the user has not touched follow the node; what they are typing is left alone.
  const showValues = (force = false) => {
    const now = { name: node.name ?? "", tags: (node.tags ?? []).join(", "), site: node.site ?? "" };
    for (const [key, input] of [["name", name], ["tags", tags], ["site", site.input]]) {
      if (force || input.value === (shown[key] ?? "")) input.value = now[key];
    }
    shown = now;
  };
  const details = h("form", { class: "manage-form", noValidate: true, "aria-label": "Name, tags and site", onsubmit: async (event) => {
    event.preventDefault();
    detailsStatus.textContent = detailsError.textContent = "";
    const changes = {};
    const newName = name.value.trim();
    if (!newName) { detailsError.textContent = "A node needs a name."; name.focus(); return; }
    if (newName !== node.name) changes.name = newName;
    let newTags;
    try { newTags = tagsFromText(tags.value); } catch (err) { detailsError.textContent = err.message; tags.focus(); return; }
    if (newTags.join(",") !== (node.tags ?? []).join(",")) changes.tags = newTags;
    let newSite;
    try { newSite = siteFromText(site.input.value); } catch (err) { detailsError.textContent = err.message; site.input.focus(); return; }
    if (newSite !== (node.site ?? null)) changes.site = newSite;
    if (!Object.keys(changes).length) { detailsStatus.textContent = "Nothing to save: nothing was changed."; return; }
    const button = event.submitter ?? details.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const { data } = await api(nodePath(), { method: "PATCH", body: changes });
      node = { ...node, ...data };
      showValues(true);
      const said = [changes.name && `renamed to “${data.name}”`, changes.tags && (data.tags.length ? `tags ${data.tags.join(", ")}` : "no tags"),
        "site" in changes && (data.site ? `moved to ${data.site}` : "no site")].filter(Boolean);
      detailsStatus.textContent = `Saved: ${said.join("; ")}.`;
      if ("site" in changes) siteCache = null;
      refresh();
    } catch (err) {
      detailsError.textContent = `Could not save the changes: ${err.message}`;
    } finally { button.disabled = false; }
  } },
  field("Name", name), field("Tags", tags, "Comma-separated; letters, digits and _ . : -"), site.el,
  h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Save changes")), detailsStatus, detailsError);

  // -- technician access -----------------------------------------------------------------
  const pin = h("input", { name: "technician_pin", type: "password", inputmode: "numeric", autocomplete: "new-password", maxLength: 12, spellcheck: "false" });
  const pinStatus = h("p", { role: "status", class: "ok" });
  const pinError = h("p", { role: "alert", class: "error" });
  const setPin = async (value) => {
    pinStatus.textContent = pinError.textContent = "";
    try {
      await api(nodePath(), { method: "PATCH", body: { technician_pin: value } });
      pin.value = "";
      pinStatus.textContent = value === null
        ? "PIN removed: technicians log in at the box with a token only."
        : "PIN set. The box receives it within seconds and keeps it for when the hub is away; the hub never shows it again.";
    } catch (err) { pinError.textContent = `Could not ${value === null ? "remove" : "set"} the PIN: ${err.message}`; }
  };
  const pinForm = h("form", { class: "manage-form", noValidate: true, "aria-label": "Technician PIN", onsubmit: async (event) => {
    event.preventDefault();
    if (!PIN.test(pin.value)) {
      pinStatus.textContent = "";
      pinError.textContent = "A PIN is 4 to 12 digits (0–9), nothing else.";
      pin.focus();
      return;
    }
    const button = event.submitter ?? pinForm.querySelector("button[type=submit]");
    button.disabled = true;
    try { await setPin(pin.value); } finally { button.disabled = false; }
  } },
  field("New PIN", pin, "4 to 12 digits, typed at the box's local page. Replaces any PIN set before."),
  h("div", { class: "button-row" }, h("button", { type: "submit" }, "Set PIN"),
    h("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirmAction(`Remove the PIN of ${node.name}?`, "Technicians can then log in at the box only with a token issued here.", "Remove PIN", true))) return;
      await setPin(null);
    } }, "Remove PIN")),
  pinStatus, pinError);

  const lifetime = h("select", { name: "ttl_s" }, TOKEN_LIFETIMES.map(([s, label]) => h("option", { value: s }, label)));
  lifetime.value = String(8 * 3600);
  const tokenResult = h("div", { class: "token-result" });
  const tokenForm = h("form", { class: "manage-form", "aria-label": "Technician token", onsubmit: async (event) => {
    event.preventDefault();
    const button = event.submitter ?? tokenForm.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const { data } = await api(`${nodePath()}/technician-token`, { method: "POST", body: { ttl_s: Number(lifetime.value) } });
      fill(tokenResult, secretBox(`Technician token for ${node.name}`, data.token),
        h("p", { class: "token-expiry" }, "Valid until ", h("strong", {}, timeEl(data.expires_at)),
          ". Paste it into the box's local page to log in there; the box checks it itself, so it works while the hub is away."));
    } catch (err) {
      fill(tokenResult, h("p", { class: "error", role: "alert" }, `Could not issue a token: ${err.message}`));
    } finally { button.disabled = false; }
  } },
  field("Valid for", lifetime), h("div", { class: "button-row" }, h("button", { type: "submit" }, "Issue a technician token")));

  // -- delete, after a preview -----------------------------------------------------------
  const deleteArea = h("div", { class: "delete-area" });
  const previewButton = h("button", { type: "button", class: "danger", onclick: () => preview() }, "Delete this node…");
  const preview = async (note = null) => {
    previewButton.disabled = true;
    fill(deleteArea, h("p", { class: "hint", role: "status" }, "Checking what deleting would remove…"));
    try {
      const { data } = await api(`${nodePath()}/delete-preview`);
      showPreview(data, note);
    } catch (err) {
      previewButton.disabled = false;
      fill(deleteArea, h("p", { class: "error", role: "alert" }, `Could not check what deleting would remove: ${err.message}`));
    }
  };
  const cancel = () => { previewButton.disabled = false; fill(deleteArea); previewButton.focus(); };
  const showPreview = (p, note) => {
    const d = p.dependents ?? {};
    const removes = h("p", {}, `Deleting ${p.node?.name ?? node.name} removes it with ${plural(d.health_events ?? 0, "health event")}`,
      d.open_health_events ? ` (${d.open_health_events} open)` : "", `, ${plural(d.status_changes ?? 0, "status change")}, its lifecycle jobs, `,
      "its channel map assignment and its level history. Its credential stops working at once. Its recordings stay in the library.");
    const blockers = (p.reasons ?? []).map(blockerText);
    const force = Boolean(p.requires_force);
    const go = h("button", { type: "button", class: "danger", onclick: () => remove(force, blockers, p.dependents) }, force ? "Delete anyway (force)" : "Delete node");
    fill(deleteArea, h("div", { class: "delete-preview", role: "group", "aria-label": "What deleting would do" },
      note ? h("p", { class: "error", role: "alert" }, note) : null,
      removes,
      force
        ? h("div", { class: "blockers" }, h("p", {}, h("strong", {}, "Stands in the way:")), h("ul", {}, blockers.map((b) => h("li", {}, b))),
          blockerLists(p.blockers, node.id),
          h("p", { class: "hint" }, "Better: stop the box (or wait until it is offline), let its recordings finish and resolve its health events, then check again. Deleting with force does it now regardless."),
          forceWarning(p.dependents))
        : h("p", { class: "ok" }, "Nothing stands in the way."),
      h("div", { class: "button-row" }, go, h("button", { type: "button", onclick: cancel }, "Cancel"), h("button", { type: "button", onclick: () => preview() }, "Check again"))));
    go.focus();
  };
  const remove = async (force, blockers, dependents) => {
    const message = force
      ? `${[...blockers, ...forceConsequences(dependents)].join(" ")} The node, its health events and status changes are deleted for good.`
      : "The node, its health events and status changes are deleted for good; its credential stops working at once.";
    if (!(await confirmAction(`Delete ${node.name}${force ? " with force" : ""}?`, message, force ? "Delete anyway" : "Delete", true))) return;
    try {
      await api(nodePath(), { method: "DELETE", params: force ? { force: "true" } : {} });
      notify(`${node.name} is deleted.`);
      siteCache = null;
      location.hash = "#/fleet";
    } catch (err) {
      if (err.status === 409) return preview(`The node changed meanwhile: ${err.message}`);
      fill(deleteArea, h("p", { class: "error", role: "alert" }, `Could not delete the node: ${err.message}`),
        h("button", { type: "button", onclick: cancel }, "Close"));
    }
  };

  const ids = { admin: uid("admin-h"), details: uid("details-h"), tech: uid("tech-h"), del: uid("delete-h") };
  fill(slot, h("section", { class: "node-admin", "aria-labelledby": ids.admin },
    h("h3", { id: ids.admin }, "Administration"),
    h("div", { class: "manage-grid" },
      h("div", { class: "manage-card", role: "group", "aria-labelledby": ids.details }, h("h4", { id: ids.details }, "Name, tags and site"), details),
      h("div", { class: "manage-card", role: "group", "aria-labelledby": ids.tech }, h("h4", { id: ids.tech }, "Technician access"),
        h("p", { class: "hint" }, "A technician at the box logs in on its local page with the PIN or with a token issued here; both work while the hub is away."),
        pinForm, tokenForm, tokenResult),
      h("div", { class: "manage-card danger-zone", role: "group", "aria-labelledby": ids.del }, h("h4", { id: ids.del }, "Delete"),
        h("p", { class: "hint" }, "First shows what deleting would remove and what stands in the way."),
        node.actions?.delete?.allowed === false ? h("p", { class: "hint" }, node.actions.delete.reason ?? "You may not delete this node.") : previewButton,
        deleteArea))));
  showValues(true);

  return {
    nodeId: node.id,
    update(next, nextReload) {
      node = { ...node, ...next };
      if (nextReload) reload = nextReload;
      showValues(false);
    },
  };
}

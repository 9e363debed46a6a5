// Share links of one recording (issue 23): make one in a dialog (the link is shown once, with a copy button),
// the recording's links with their state, uses and expiry, and Revoke. Only for holders of recording:share.
import { api, can } from "./api.js";
import { confirmAction, field, fill, h, notify, secretBox, timeEl, uid } from "./dom.js";

const DAY_MS = 24 * 3600 * 1000;
const STATE_WORDS = { active: "active", expired: "expired", revoked: "revoked", used_up: "used up" };

/** A datetime-local value (the browser's zone) `days` from now, to the minute. */
function localInput(days) {
  const at = new Date(Date.now() + days * DAY_MS);
  at.setSeconds(0, 0);
  return new Date(at.getTime() - at.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

/** The create dialog; resolves once closed (true when a link was made). */
function createDialog(path) {
  return new Promise((resolve) => {
    const headingId = uid("share-h");
    const expires = h("input", { type: "datetime-local", name: "expires_at", required: true, value: localInput(7) });
    const password = h("input", { type: "password", name: "password", autocomplete: "new-password", minLength: 8 });
    const maxUses = h("input", { type: "number", name: "max_uses", min: 1, max: 100000, step: 1 });
    const download = h("input", { type: "checkbox", name: "allow_download" });
    const label = h("input", { type: "text", name: "label", maxLength: 200 });
    const problem = h("p", { class: "error", role: "alert" });
    const dialog = h("dialog", { class: "confirm share-dialog", "aria-labelledby": headingId });
    let made = false;
    const done = () => { dialog.close(); dialog.remove(); resolve(made); };
    const submit = h("button", { type: "submit", class: "primary" }, "Create link");
    const form = h("form", { method: "dialog", novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      const when = new Date(expires.value);
      if (!expires.value || Number.isNaN(when.getTime())) { problem.textContent = "Say when the link expires."; return; }
      if (password.value && password.value.length < 8) { problem.textContent = "A password has at least 8 characters."; return; }
      const body = { expires_at: when.toISOString(), allow_download: download.checked, label: label.value.trim() };
      if (password.value) body.password = password.value;
      if (maxUses.value) body.max_uses = Number(maxUses.value);
      submit.disabled = true;
      try {
        const { data } = await api(`${path}/share-links`, { method: "POST", body });
        made = true;
        fill(dialog, h("h2", { id: headingId }, "Link created"),
          secretBox("Share link", data.url),
          h("p", { class: "hint" }, "Anyone with this link can listen until it expires",
            data.share_link.has_password ? " and only with the password." : ".", " Send the password separately."),
          h("div", { class: "buttons" }, h("button", { type: "button", class: "primary", onclick: done }, "Done")));
      } catch (err) {
        const fields = err.detail?.fields;
        problem.textContent = fields ? Object.entries(fields).map(([k, v]) => `${k.replace("_", " ")}: ${v}`).join("; ") : err.message;
        submit.disabled = false;
      }
    } },
    h("h2", { id: headingId }, "Share this recording"),
    h("p", {}, "Anyone with the link can play the recording without an account. The link is shown only once."),
    field("Expires", expires, "In your time zone; at most the hub's limit (30 days unless changed)."),
    field("Password (optional)", password, "At least 8 characters."),
    field("Maximum uses (optional)", maxUses, "How many times the link may be opened."),
    h("div", { class: "field" }, h("label", {}, download, " Allow download")),
    field("Label (optional)", label, "Who the link is for."),
    problem,
    h("div", { class: "buttons" },
      h("button", { type: "button", onclick: done }, "Cancel"),
      submit));
    fill(dialog, form);
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(); });
    document.body.append(dialog);
    dialog.showModal();
    expires.focus();
  });
}

function linkRow(link, revoked) {
  const revoke = link.actions?.revoke?.allowed
    ? h("button", { type: "button", class: "danger", onclick: async () => {
      if (!(await confirmAction("Revoke this link?", "It stops working at once for everyone who has it.", "Revoke", true))) return;
      try {
        await api(`/api/v1/share-links/${encodeURIComponent(link.id)}`, { method: "DELETE" });
        notify("Share link revoked.");
        revoked();
      } catch (err) { notify(`Not revoked: ${err.message}`, "error"); }
    } }, "Revoke")
    : null;
  return h("tr", { dataset: { linkId: link.id } },
    h("td", {}, link.label || h("span", { class: "hint" }, `…${link.token_prefix}`)),
    h("td", {}, h("span", { class: `state state-${link.state}`, dataset: { state: link.state } }, STATE_WORDS[link.state] ?? link.state)),
    h("td", {}, link.max_uses === null ? `${link.uses}` : `${link.uses} of ${link.max_uses}`),
    h("td", {}, timeEl(link.expires_at)),
    h("td", {}, link.has_password ? "yes" : "no"),
    h("td", {}, link.allow_download ? "yes" : "no"),
    h("td", { class: "actions" }, revoke));
}

/** Fill `el` with the recording's share links and the Create button (nothing without recording:share). */
export async function renderShareLinks(el, recording, path) {
  if (!can("recording:share")) { fill(el); return; }
  const reload = () => renderShareLinks(el, recording, path);
  if (recording.status !== "completed") { fill(el, h("p", { class: "hint" }, "Only a completed recording can be shared.")); return; }
  const create = h("button", { type: "button", onclick: async () => { if (await createDialog(path)) reload(); } }, "Create share link");
  let links;
  try {
    links = (await api(`${path}/share-links`, { params: { limit: 200 } })).data;
  } catch (err) {
    fill(el, create, h("p", { class: "error" }, `Could not load the share links: ${err.message}`));
    return;
  }
  const table = links.length
    ? h("div", { class: "table-wrap" }, h("table", { class: "share-links" },
      h("thead", {}, h("tr", {}, ["Label", "State", "Uses", "Expires", "Password", "Download", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, links.map((link) => linkRow(link, reload)))))
    : h("p", { class: "hint" }, "No share links yet.");
  fill(el, h("div", { class: "button-row" }, create), table);
}

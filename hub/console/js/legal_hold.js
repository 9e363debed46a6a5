// Legal hold on one recording (issue 20): its state, reason, who and when; place it (with a reason) or release it.
// A held recording cannot be deleted; the recording page disables its Delete button with the reason.
import { api } from "./api.js";
import { confirmAction, field, fill, h, notify, timeEl, uid } from "./dom.js";

export const MAX_REASON = 500;

/** The reason a hold needs, asked in a dialog; resolves to the text, or null when cancelled. */
export function askHoldReason(current = "") {
  return new Promise((resolve) => {
    const headingId = uid("hold-h");
    const input = h("textarea", { name: "reason", rows: 3, maxLength: MAX_REASON, required: true }, current);
    const problem = h("p", { class: "error", role: "alert" });
    const dialog = h("dialog", { class: "confirm legal-hold-dialog", "aria-labelledby": headingId });
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    const form = h("form", { method: "dialog", novalidate: true, onsubmit: (event) => {
      event.preventDefault();
      const reason = input.value.trim();
      if (!reason) { problem.textContent = "Say why the recording is held."; return; }
      if (reason.length > MAX_REASON) { problem.textContent = `At most ${MAX_REASON} characters.`; return; }
      done(reason);
    } },
    h("h2", { id: headingId }, "Place on legal hold"),
    h("p", {}, "While held, the recording cannot be deleted by anyone, and retention never removes it."),
    field("Reason", input, `Up to ${MAX_REASON} characters, e.g. a case or request number.`),
    problem,
    h("div", { class: "buttons" },
      h("button", { type: "button", onclick: () => done(null) }, "Cancel"),
      h("button", { type: "submit", class: "primary" }, "Place hold")));
    fill(dialog, form);
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(null); });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

/** Fill `el` with the recording's legal hold and its buttons; `changed(recording)` gets the recording after a change. */
export function renderLegalHold(el, recording, path, changed) {
  const action = recording.actions?.legal_hold;
  const held = Boolean(recording.legal_hold);
  const state = held
    ? h("div", { class: "legal-hold held", dataset: { held: "true" } },
      h("p", {}, h("strong", {}, "Held. "), recording.legal_hold_reason ?? ""),
      h("p", { class: "hint" }, "Placed by ", recording.legal_hold_by?.name ?? recording.legal_hold_by?.id ?? "—", " at ", timeEl(recording.legal_hold_at),
        ". The recording cannot be deleted until the hold is released."))
    : h("div", { class: "legal-hold", dataset: { held: "false" } }, h("p", {}, "Not held."));
  const buttons = [];
  if (action?.allowed) {
    if (held) {
      buttons.push(h("button", { type: "button", onclick: async () => {
        const reason = await askHoldReason(recording.legal_hold_reason ?? "");
        if (reason !== null) await send({ method: "PUT", body: { reason } }, "Legal hold reason changed.");
      } }, "Change reason"));
      buttons.push(h("button", { type: "button", class: "danger", onclick: async () => {
        if (!(await confirmAction("Release the legal hold?", "The recording can then be deleted again, by people and by retention.", "Release hold", true))) return;
        await send({ method: "DELETE" }, "Legal hold released.");
      } }, "Release hold"));
    } else {
      buttons.push(h("button", { type: "button", onclick: async () => {
        const reason = await askHoldReason();
        if (reason !== null) await send({ method: "PUT", body: { reason } }, "Recording placed on legal hold.");
      } }, "Place on hold"));
    }
  } else if (action?.reason) {
    buttons.push(h("p", { class: "hint" }, `You cannot change the hold: ${action.reason}.`));
  }

  async function send(request, done) {
    try {
      const { data } = await api(`${path}/legal-hold`, request);
      notify(done);
      changed(data);
    } catch (err) { notify(`Legal hold not changed: ${err.message}`, "error"); }
  }

  fill(el, state, buttons.length ? h("div", { class: "button-row" }, buttons) : null);
}

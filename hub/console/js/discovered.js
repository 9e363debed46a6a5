// New boxes: nodes on the hub's network that announce themselves by mDNS and wait to be claimed
// with the code on their label, and enrolling a box by hand (its credential shown once).
import { api } from "./api.js";
import { field, fill, h, secretBox, timeEl } from "./dom.js";
import { siteField, siteFromText, tagsFromText } from "./node_admin.js";
import { plural } from "./words.js";

const REFRESH_MS = 10000;
const CLAIM_CODE = /^[0-9A-Za-z]{8}$/;

const nodeLink = (node) => h("a", { href: `#/nodes/${encodeURIComponent(node.id)}` }, node.name);

/** Why a claim failed, in words the installer can act on. */
function claimError(err) {
  if (err.code === "claim_code_invalid") return "The box refused the claim code: check the code on its label and try again. After five wrong codes in a minute it refuses every code for a while.";
  if (err.code === "already_enrolled" || (err.status === 409 && err.detail?.node_id)) return "This box is enrolled already; it is no longer waiting to be claimed.";
  if (err.status === 404) return "The hub no longer sees this box on the network: is it still switched on and connected?";
  if (err.status === 503) return `The hub could not hand the box its identity, so nothing was enrolled: ${err.message}`;
  return `Could not claim the box: ${err.message}`;
}

/** One discovered box with its claim form: { el, claimed, busy, update(box) }. */
function boxCard(box) {
  const card = { el: null, claimed: false, busy: false };
  const headingId = `box-${box.hardware_id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const facts = h("dl", { class: "facts" });
  const showFacts = (b) => fill(facts, [
    ["Software", b.version || "—"], ["Audio", b.audio || "—"],
    ["Address", (b.addresses ?? []).join(", ") || "—"], ["Local page", b.local_url ? h("code", { class: "wrap" }, b.local_url) : "—"],
  ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  showFacts(box);

  const code = h("input", { name: "claim_code", autocomplete: "off", spellcheck: "false", maxLength: 20, placeholder: "e.g. 7KQ2-M9XD", class: "claim-code" });
  const name = h("input", { name: "name", autocomplete: "off", maxLength: 200 });
  const site = siteField("", "Choose a site or type a new one; empty: no site.");
  const tags = h("input", { name: "tags", autocomplete: "off", spellcheck: "false", placeholder: "e.g. roof, west" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "manage-form claim-form", noValidate: true, "aria-label": `Claim ${box.hardware_id}`, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    const typed = code.value.replace(/[\s-]/g, "");
    if (!CLAIM_CODE.test(typed)) { error.textContent = "The claim code is the 8 letters and digits on the box's label, e.g. 7KQ2-M9XD."; code.focus(); return; }
    if (!name.value.trim()) { error.textContent = "Give the box a name, e.g. where it is mounted."; name.focus(); return; }
    let tagList, siteName;
    try { siteName = siteFromText(site.input.value); } catch (err) { error.textContent = err.message; site.input.focus(); return; }
    try { tagList = tagsFromText(tags.value); } catch (err) { error.textContent = err.message; tags.focus(); return; }
    const body = { claim_code: code.value.trim(), name: name.value.trim(), tags: tagList };
    if (siteName) body.site = siteName;
    const button = event.submitter ?? form.querySelector("button[type=submit]");
    button.disabled = true;
    card.busy = true;
    try {
      const { data } = await api(`/api/v1/discovered-nodes/${encodeURIComponent(box.hardware_id)}/enroll`, { method: "POST", body });
      card.claimed = true;
      const done = h("p", { class: "ok", role: "status", tabindex: "-1" }, "Claimed as ", nodeLink(data.node), data.node.site ? ` at ${data.node.site}` : "",
        ". The box has its identity and connects on its own within seconds.");
      fill(form, done);
      done.focus(); // the form that had the focus is gone
    } catch (err) {
      error.textContent = claimError(err);
    } finally {
      button.disabled = false;
      card.busy = false;
    }
  } },
  field("Claim code", code, "On the box's label (and in its log)."), field("Name", name), site.el,
  field("Tags", tags, "Comma-separated."),
  h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Claim this box")), error);

  card.el = h("article", { class: "box-card", "aria-labelledby": headingId, dataset: { hardwareId: box.hardware_id } },
    h("h3", { id: headingId }, h("code", {}, box.hardware_id)), facts, form);
  card.update = (b) => { if (!card.claimed) showFacts(b); };
  return card;
}

function manualEnroll() {
  const name = h("input", { name: "name", autocomplete: "off", maxLength: 200 });
  const site = siteField("", "Choose a site or type a new one; empty: no site.");
  const tags = h("input", { name: "tags", autocomplete: "off", spellcheck: "false", placeholder: "e.g. roof, west" });
  const hardware = h("input", { name: "hardware_id", autocomplete: "off", spellcheck: "false", maxLength: 200, placeholder: "optional" });
  const result = h("div", { class: "enroll-result" });
  const form = h("form", { class: "manage-form enroll-form", noValidate: true, "aria-label": "Enroll a box by hand", onsubmit: async (event) => {
    event.preventDefault();
    const fail = (message, control) => { fill(result, h("p", { class: "error", role: "alert" }, message)); control?.focus(); };
    if (!name.value.trim()) return fail("Give the box a name, e.g. where it is mounted.", name);
    let tagList, siteName;
    try { siteName = siteFromText(site.input.value); } catch (err) { return fail(err.message, site.input); }
    try { tagList = tagsFromText(tags.value); } catch (err) { return fail(err.message, tags); }
    const body = { name: name.value.trim(), tags: tagList };
    if (siteName) body.site = siteName;
    if (hardware.value.trim()) body.hardware_id = hardware.value.trim();
    const button = event.submitter ?? form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const { data } = await api("/api/v1/nodes/enroll", { method: "POST", body });
      form.reset();
      fill(result,
        h("p", { class: "ok", role: "status" }, "Enrolled ", nodeLink(data.node), ` (id `, h("code", {}, data.node.id), "). It shows as pending until the box connects."),
        data.credential ? secretBox(`Credential of ${data.node.name}`, data.credential) : null,
        h("p", { class: "hint" }, "Give the box its node id and this credential (HARK_NODE_ID and HARK_NODE_CREDENTIAL, or with hark-provision). ",
          "Lost it? Rotate the credential on the node's page."));
    } catch (err) {
      fail(err.status === 409 ? `Could not enroll: ${err.message} (a hardware id can be enrolled only once).` : `Could not enroll the box: ${err.message}`);
    } finally { button.disabled = false; }
  } },
  field("Name", name), site.el, field("Tags", tags, "Comma-separated."),
  field("Hardware id", hardware, "A MAC address or serial number; unique in the fleet."),
  h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Enroll")));
  return h("section", { class: "manual-enroll", "aria-labelledby": "manual-h" },
    h("h3", { id: "manual-h" }, "Enroll a box by hand"),
    h("p", { class: "hint" }, "For a box that is not on this network or not seen here: the hub makes the node and its credential, which you then give to the box."),
    form, result);
}

export function renderDiscovered(view) {
  const cards = new Map(); // hardware id -> card
  const list = h("div", { class: "box-list" });
  const status = h("p", { class: "hint", role: "status" });
  const error = h("p", { class: "error", role: "alert" });
  const empty = h("div", { class: "empty-state", hidden: true },
    h("p", {}, h("strong", {}, "No new boxes are on the network.")),
    h("p", { class: "hint" }, "A box that has not been claimed yet announces itself by mDNS on the hub's local network. ",
      "Switch it on and connect it to the same network (and VLAN) as the hub: it shows here within seconds. ",
      "The claim code is on its label. A box on another network can be enrolled by hand below."));
  fill(view, h("div", { class: "discovered" },
    h("section", { "aria-labelledby": "new-boxes-h" },
      h("div", { class: "title-row" }, h("h2", { id: "new-boxes-h" }, "New boxes"), status,
        h("button", { type: "button", class: "small", onclick: () => load() }, "Check now")),
      h("p", { class: "hint" }, "Boxes on the hub's network waiting to be claimed. Claiming one enrolls it and hands it its identity; it then connects by itself."),
      error, empty, list),
    manualEnroll()));

  let stopped = false;
  const load = async () => {
    let boxes;
    try {
      boxes = (await api("/api/v1/discovered-nodes")).data;
    } catch (err) {
      if (!stopped) error.textContent = `Could not list the new boxes: ${err.message}`;
      return;
    }
    if (stopped) return;
    error.textContent = "";
    const seen = new Set(boxes.map((box) => box.hardware_id));
    for (const box of boxes) {
      const known = cards.get(box.hardware_id);
      if (known) { known.update(box); continue; }
      const card = boxCard(box);
      cards.set(box.hardware_id, card);
      list.append(card.el); // appended, never re-filled: a form being typed in keeps its focus
    }
    // A box that went away goes, unless it was just claimed here (its result stays) or is being claimed.
    for (const [hardwareId, card] of cards) {
      if (!seen.has(hardwareId) && !card.claimed && !card.busy) { card.el.remove(); cards.delete(hardwareId); }
    }
    const waiting = boxes.filter((box) => !cards.get(box.hardware_id)?.claimed).length;
    empty.hidden = cards.size > 0;
    fill(status, waiting ? `${plural(waiting, "box", "boxes")} waiting` : "none waiting", " · checked ", timeEl(new Date().toISOString()), " · every 10 s");
  };
  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => { stopped = true; clearInterval(timer); };
}

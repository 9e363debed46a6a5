// Where a recording's copies are (issue 20): the hub's, each upload provider's and the node cache's, with their
// states and checksums, and what retention decides now for the hub's and the node's copy, and why.
import { api } from "./api.js";
import { fill, h, timeEl } from "./dom.js";

const HUB_WORDS = {
  confirmed: "stored, checksum verified",
  present: "stored, not verified yet",
  absent: "not on the hub",
  evicted: "deleted by retention",
};
const NODE_WORDS = { present: "in the node's cache", evicted: "evicted from the node's cache" };
const ITEM_WORDS = { pending: "waiting", queued: "queued", uploading: "uploading", synced: "synced", failed: "failed" };

const short = (sha) => (sha ? h("code", { title: sha }, `${sha.slice(0, 16)}…`) : "—");

function decision(label, d) {
  return h("p", { class: "decision", dataset: { action: d.action } },
    h("strong", {}, `${label}: `), d.action === "delete" ? "may be deleted now — " : "kept — ", d.reason);
}

/** Fill `el` with the recording's copies (read from `path`/copies). */
export async function renderCopies(el, path) {
  let copies;
  try {
    copies = (await api(`${path}/copies`)).data;
  } catch (err) {
    fill(el, h("p", { class: "error" }, `Could not load where the copies are: ${err.message}`));
    return;
  }
  const hub = copies.hub;
  const rows = [
    h("tr", { dataset: { place: "hub" } },
      h("th", { scope: "row" }, "Hub"),
      h("td", {}, h("span", { class: `state-${hub.state}` }, HUB_WORDS[hub.state] ?? hub.state),
        hub.evicted_at ? h("span", { class: "hint" }, " at ", timeEl(hub.evicted_at), hub.evicted_reason ? ` (${hub.evicted_reason})` : "") : null),
      h("td", {}, short(hub.sha256)),
      h("td", {}, hub.key ? h("code", {}, hub.key) : "—")),
    ...copies.providers.map((p) => h("tr", { dataset: { place: `provider:${p.provider_id}` } },
      h("th", { scope: "row" }, p.name ?? p.provider_id, p.kind ? h("span", { class: "hint" }, ` (${p.kind})`) : null),
      h("td", {}, h("span", { class: `state-${p.state}` }, ITEM_WORDS[p.state] ?? p.state),
        p.confirmed ? h("span", { class: "hint" }, `, confirmed${p.verified_by ? ` by ${p.verified_by}` : ""}`) : null,
        p.synced_at ? h("span", { class: "hint" }, " ", timeEl(p.synced_at)) : null,
        p.last_error && p.state === "failed" ? h("span", { class: "hint" }, ` — ${p.last_error}`) : null),
      h("td", {}, short(p.checksum_sha256)),
      h("td", {}, p.remote_key ? h("code", {}, p.remote_key) : "—"))),
    h("tr", { dataset: { place: "node" } },
      h("th", { scope: "row" }, "Node cache"),
      h("td", {}, h("span", { class: `state-${copies.node.state}` }, NODE_WORDS[copies.node.state] ?? copies.node.state),
        copies.node.at ? h("span", { class: "hint" }, " ", timeEl(copies.node.at)) : copies.node.reported ? null : h("span", { class: "hint" }, " (not reported by the node)")),
      h("td", {}, "—"),
      h("td", {}, "—")),
  ];
  fill(el,
    h("div", { class: "table-wrap" }, h("table", { class: "copies-table" },
      h("caption", {}, `Original checksum (SHA-256): ${copies.sha256 ?? "none yet"}`),
      h("thead", {}, h("tr", {}, ["Where", "State", "Checksum", "Key"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))),
    copies.providers.length ? null : h("p", { class: "hint" }, "No off-site copy is queued for this recording."),
    decision("Hub copy", copies.retention.hub),
    decision("Node copy", copies.retention.node),
    copies.retention.policy_id
      ? h("p", { class: "hint" }, "Retention policy: ", h("a", { href: `#/retention/${encodeURIComponent(copies.retention.policy_id)}` },
        copies.retention.policy_name ?? copies.retention.policy_id))
      : h("p", { class: "hint" }, "No retention policy covers this recording."));
}

// The node delete dialog's blockers (GET /api/v1/nodes/{id}/delete-preview): each one named with its id,
// and what deleting with force would do to them, in words, before anyone presses the button.
import { bytes, h } from "./dom.js";
import { kindTitle, plural } from "./words.js";

const recordingLink = (id, text) => h("a", { href: `#/recordings/${encodeURIComponent(id)}` }, text);

/** One list per kind of blocker (only the kinds there are), each item naming its id. */
export function blockerLists(blockers, nodeId) {
  if (!blockers) return null;
  const lists = [];
  const list = (label, items) => {
    if (items.length) lists.push(h("div", { class: "blocker-kind" }, h("p", {}, h("strong", {}, label)), h("ul", { "aria-label": label }, items)));
  };
  list("Recordings in progress or uploading", blockers.active_recordings.map((r) => h("li", { dataset: { id: r.id } },
    recordingLink(r.id, `“${r.name}”`), ` — ${r.status} `, h("code", {}, r.id))));
  list("Jobs queued or running", blockers.jobs.map((j) => h("li", { dataset: { id: j.id } },
    j.kind === "recording" ? ["Recording job for ", j.recording_id ? recordingLink(j.recording_id, `“${j.label}”`) : `“${j.label}”`]
      : `Lifecycle job “${j.label}”`,
    " ", h("span", { class: `state state-${j.state}` }, j.state), " ", h("code", {}, j.id))));
  list("Uploads not finished", blockers.pending_uploads.map((u) => h("li", { dataset: { id: u.recording_id } },
    recordingLink(u.recording_id, `“${u.name}”`),
    u.bytes_total ? ` — ${bytes(u.bytes_sent ?? 0)} of ${bytes(u.bytes_total)} at the hub` : " — uploading", " ", h("code", {}, u.recording_id))));
  list("Open health events", blockers.health_events.map((e) => h("li", { dataset: { id: e.id } },
    h("a", { href: `#/health?node_id=${encodeURIComponent(nodeId)}` }, kindTitle(e.kind)), ` — ${e.severity}, ${e.state} `, h("code", {}, e.id))));
  return lists.length ? h("div", { class: "blocker-lists" }, lists) : null;
}

/** What a forced delete ends, in one sentence per kind (empty when nothing but the connection stands in the way). */
export function forceConsequences(dependents) {
  const d = dependents ?? {};
  const said = [];
  if (d.unfinished_recording_jobs) {
    const one = d.unfinished_recording_jobs === 1;
    said.push(`${plural(d.unfinished_recording_jobs, "recording job")} ${one ? "is" : "are"} cancelled: ${one ? "its recording ends" : "their recordings end"} as cancelled, and audio still on the box is never uploaded.`);
  }
  if (d.pending_uploads) said.push(`${plural(d.pending_uploads, "unfinished upload")} ${d.pending_uploads === 1 ? "is" : "are"} dropped at the hub.`);
  if (d.unfinished_lifecycle_jobs) {
    said.push(`${plural(d.unfinished_lifecycle_jobs, "lifecycle job")} ${d.unfinished_lifecycle_jobs === 1 ? "expires or fails" : "expire or fail"}.`);
  }
  if (d.open_health_events) said.push(`${plural(d.open_health_events, "open health event")} ${d.open_health_events === 1 ? "is" : "are"} resolved.`);
  return said;
}

/** The warning shown beside the force button. */
export function forceWarning(dependents) {
  const said = forceConsequences(dependents);
  return h("div", { class: "force-warning", role: "note", "aria-label": "What force does" },
    h("p", {}, h("strong", {}, "Deleting with force cannot be undone."), said.length ? " First:" : " The node is cut off at once."),
    said.length ? h("ul", {}, said.map((s) => h("li", {}, s))) : null,
    said.length ? h("p", {}, "Each of these is written to the audit log, then the node is deleted.") : null);
}

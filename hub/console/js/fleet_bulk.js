// The fleet's bulk bar: what to do with the selected nodes (a lifecycle action, a channel map, a
// recording), asked for once, run node by node a few at a time, with progress and a result per node.
import { api, can, listAll } from "./api.js";
import { confirmAction, field, fill, h, select } from "./dom.js";
import { plural } from "./words.js";

// action -> [label, disruptive (asks first; interrupts capture or the connection)]
export const LIFECYCLE = {
  identify: ["Identify (blink and beep)", false],
  "sync-time": ["Synchronise the clock", false],
  "collect-diagnostics": ["Collect diagnostics", false],
  "restart-audio": ["Restart audio", true],
  "restart-agent": ["Restart the agent", true],
  reboot: ["Reboot", true],
};

const AT_ONCE = 4; // requests in flight at a time: the hub stays responsive for everyone else

/** Call `work(node)` for each node, AT_ONCE at a time; `progress(done, total)` after each. */
async function each(nodes, work, progress) {
  const results = new Array(nodes.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < nodes.length) {
      const i = next++;
      try {
        results[i] = { node: nodes[i], ok: true, text: await work(nodes[i]) };
      } catch (error) {
        results[i] = { node: nodes[i], ok: false, text: error.message };
      }
      progress(++done, nodes.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(AT_ONCE, nodes.length) }, worker));
  return results;
}

/** "3 of them are offline: …" for nodes that are not connected, or "". */
function waitingWords(nodes, what) {
  const offline = nodes.filter((n) => n.status === "offline").length;
  const pending = nodes.filter((n) => n.status === "pending").length;
  if (!offline && !pending) return "";
  const parts = [offline && `${offline} of them ${offline === 1 ? "is" : "are"} offline`,
    pending && `${pending} ${pending === 1 ? "has" : "have"} never connected`].filter(Boolean).join(" and ");
  return ` ${parts}: ${what}`;
}

/**
 * The bar. `selection()` gives the selected node objects; `hiddenCount()` how many of them the
 * filters hide; `clear()` empties the selection. Returns {el, update()}.
 */
export function bulkBar({ selection, hiddenCount, clear }) {
  const count = h("strong", { class: "bulk-count" });
  const hiddenNote = h("span", { class: "hint" });
  const progress = h("p", { class: "bulk-progress", role: "status", "aria-live": "polite" });
  const results = h("div", { class: "bulk-results" });
  const forms = h("div", { class: "bulk-forms" });
  let busy = false;
  const buttons = [];
  const setBusy = (value) => { busy = value; for (const b of buttons) b.disabled = value; };

  const report = (title, outcome) => {
    const failed = outcome.filter((r) => !r.ok);
    const ordered = [...failed, ...outcome.filter((r) => r.ok)];
    progress.textContent = `${title}: ${outcome.length - failed.length} of ${plural(outcome.length, "node")} done${failed.length ? `, ${failed.length} failed` : ""}.`;
    fill(results,
      h("ul", { class: "bulk-result-list", "aria-label": `${title}: result per node` }, ordered.map((r) =>
        h("li", { class: r.ok ? "ok" : "failed", dataset: { nodeId: r.node.id } },
          h("span", { class: "outcome" }, r.ok ? "ok" : "failed"), " ",
          h("a", { href: `#/nodes/${encodeURIComponent(r.node.id)}` }, r.node.name), " — ", r.text))),
      h("button", { type: "button", class: "link", onclick: () => { fill(results); progress.textContent = ""; } }, "Dismiss results"));
  };

  const run = async (title, nodes, work) => {
    setBusy(true);
    fill(results);
    progress.textContent = `${title}: 0 of ${plural(nodes.length, "node")} done`;
    try {
      const outcome = await each(nodes, work, (done, total) => {
        progress.textContent = `${title}: ${done} of ${plural(total, "node")} done`;
      });
      report(title, outcome);
    } finally {
      setBusy(false);
    }
  };

  // -- lifecycle actions (node:manage) ---------------------------------------------------------
  if (can("node:manage")) {
    const action = select([["", "Choose an action…"], ...Object.entries(LIFECYCLE).map(([value, [label]]) => [value, label])], "", { name: "bulk-action" });
    const go = h("button", { type: "button", class: "primary", onclick: async () => {
      const chosen = action.value;
      const nodes = selection();
      if (!chosen || !nodes.length || busy) return;
      const [label, disruptive] = LIFECYCLE[chosen];
      const waiting = waitingWords(nodes, "the action waits until they reconnect (expires in 1 h).");
      if (disruptive || waiting) {
        const ok = await confirmAction(`${label}: ${plural(nodes.length, "node")}`,
          `${label} on ${plural(nodes.length, "selected node")}?${disruptive ? " Recordings running on them are interrupted." : ""}${waiting}`,
          label, disruptive);
        if (!ok) return;
      }
      await run(label, nodes, async (node) => {
        const { data } = await api(`/api/v1/nodes/${encodeURIComponent(node.id)}/lifecycle/${chosen}`, { method: "POST", body: {} });
        return data.state === "sent" ? "sent to the node" : `${data.state}${node.status === "online" || node.status === "degraded" ? "" : " until it reconnects"}`;
      });
    } }, "Run");
    buttons.push(go);
    forms.append(h("div", { class: "bulk-form", role: "group", "aria-label": "Lifecycle" }, field("Lifecycle action", action), go));
  }

  // -- a channel map (settings:manage) --------------------------------------------------------
  let templatesLoaded = false;
  const template = select([["", "Loading templates…"]], "", { name: "bulk-channel-map" });
  if (can("settings:manage")) {
    const assign = h("button", { type: "button", onclick: async () => {
      const nodes = selection();
      const id = template.value;
      if (!id || !nodes.length || busy) return;
      const name = template.selectedOptions[0]?.textContent ?? id;
      const waiting = waitingWords(nodes, "they take the map when they reconnect.");
      if (!await confirmAction(`Assign a channel map to ${plural(nodes.length, "node")}`,
        `Give ${plural(nodes.length, "selected node")} the channel map “${name}”? Each applies it to its input at once.${waiting}`, "Assign")) return;
      // One request for all of them; the hub answers per node.
      await run(`Channel map “${name}”`, nodes, (() => {
        let answer = null;
        const byNode = async () => {
          answer ??= api("/api/v1/settings/channel-map-assignments/bulk", { method: "POST", body: { node_ids: nodes.map((n) => n.id), template_id: id } })
            .then(({ data }) => new Map(data.map((r) => [r.node_id, r])));
          return answer;
        };
        return async (node) => {
          const result = (await byNode()).get(node.id);
          if (!result) throw new Error("The hub did not answer for this node.");
          if (!result.ok) throw new Error(result.error?.message ?? result.error?.code ?? "failed");
          return result.changed ? "assigned" : "already had it";
        };
      })());
    } }, "Assign");
    buttons.push(assign);
    forms.append(h("div", { class: "bulk-form", role: "group", "aria-label": "Channels" }, field("Channel map", template), assign));
  }

  // -- a recording on each (recording:create) -------------------------------------------------
  let profilesLoaded = false;
  const profile = select([["", "Default profile"]], "", { name: "bulk-profile" });
  if (can("recording:create")) {
    const length = h("input", { type: "number", min: "1", step: "1", name: "bulk-duration", placeholder: "until stopped", inputMode: "numeric" });
    const name = h("input", { type: "text", name: "bulk-name", maxLength: 200, placeholder: "the node's name and the time" });
    const start = h("button", { type: "button", onclick: async () => {
      const nodes = selection();
      if (!nodes.length || busy) return;
      const duration = length.value ? Number(length.value) : null;
      if (duration !== null && !(duration > 0)) { progress.textContent = "The length must be a number of seconds above 0."; return; }
      const profileName = profile.selectedOptions[0]?.textContent ?? "default";
      const waiting = waitingWords(nodes, "their recordings wait in the queue until they reconnect.");
      if (!await confirmAction(`Record on ${plural(nodes.length, "node")}`,
        `Start a recording ${duration ? `of ${plural(duration, "second")} ` : "that runs until stopped "}on ${plural(nodes.length, "selected node")} with the profile “${profileName}”?${waiting}`,
        "Start recording")) return;
      await run("Recording", nodes, async (node) => {
        const body = { node_id: node.id, duration_s: duration, profile_id: profile.value || null };
        if (name.value.trim()) body.name = `${name.value.trim()} — ${node.name}`.slice(0, 200);
        const { data } = await api("/api/v1/recordings", { method: "POST", body });
        return h("span", {}, "queued as ", h("a", { href: `#/recordings/${encodeURIComponent(data.recording.id)}` }, data.recording.name ?? data.recording.id));
      });
    } }, "Start recording");
    buttons.push(start);
    forms.append(h("div", { class: "bulk-form", role: "group", "aria-label": "Recordings" },
      field("Recording profile", profile), field("Length (s)", length), field("Recording name", name), start));
  }

  const loadChoices = async () => {
    if (can("settings:manage") && !templatesLoaded) {
      templatesLoaded = true;
      try {
        const rows = await listAll("/api/v1/settings/channel-map-templates");
        fill(template, h("option", { value: "" }, rows.length ? "Choose a template…" : "No templates yet"),
          rows.map((t) => h("option", { value: t.id }, `${t.name} (${plural(t.channel_count ?? t.channels.length, "channel")})`)));
      } catch (error) {
        templatesLoaded = false;
        fill(template, h("option", { value: "" }, `Templates unavailable: ${error.message}`));
      }
    }
    if (can("recording:create") && can("settings:read") && !profilesLoaded) {
      profilesLoaded = true;
      try {
        const rows = await listAll("/api/v1/settings/recording-profiles");
        fill(profile, rows.map((p) => h("option", { value: p.builtin && p.name === "default" ? "" : p.id }, p.name)));
        if (!rows.length) fill(profile, h("option", { value: "" }, "default"));
      } catch {
        profilesLoaded = false; // the default profile still works
      }
    }
  };

  const el = h("section", { class: "bulk-bar", "aria-label": "Selected nodes", hidden: true },
    h("div", { class: "bulk-head" }, count, hiddenNote,
      h("button", { type: "button", class: "link", onclick: () => clear() }, "Clear selection")),
    forms.childElementCount ? forms : h("p", { class: "hint" }, "Your roles allow no action on several nodes at once."),
    progress, results);

  const update = () => {
    const n = selection().length;
    const hidden = hiddenCount();
    count.textContent = `${plural(n, "node")} selected`;
    hiddenNote.textContent = hidden ? `(${hidden} not shown by the filters)` : "";
    // The bar stays while a run's progress or results are on screen.
    el.hidden = !n && !busy && !results.childElementCount;
    if (n) loadChoices();
  };
  return { el, update };
}

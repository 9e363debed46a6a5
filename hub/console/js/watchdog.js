// Watchdog policies: which detectors a node runs on its meter stream (silence, clipping, flatline, DC
// offset, noise floor against a calibrated baseline, device loss, format change, disk hours left), the
// remediation ladder each may climb, where a policy applies (site, node, a node's channel), and a
// calibration per node with the baseline it measured.
import { api, can, listAll } from "./api.js";
import { confirmAction, field, fill, h, notify, select, timeEl } from "./dom.js";
import { plural } from "./words.js";

const POLICIES = "/api/v1/settings/watchdog-policies";
const POLL_MS = 1000;
const SEVERITIES = ["info", "warning", "critical"];
const ACTIONS = [["restart-audio", "Restart audio"], ["restart-agent", "Restart the agent"], ["reboot", "Reboot"]];
const MAX_STEPS = 10;
// Each detector: its title, what it watches, and its own settings [name, label, min, max, step].
const DETECTORS = {
  silence: ["Silence", "No sample reaches the threshold for the hold time.",
    [["threshold_dbfs", "Threshold (dBFS)", -150, 0, 1], ["hold_s", "Hold (s)", 0.1, 86400, 0.1]]],
  clipping: ["Clipping", "Clipped samples in a frame; clears after a quiet spell.",
    [["min_samples", "Clipped samples per frame", 1, 1000000, 1], ["clear_s", "Clears after (s)", 0.1, 86400, 0.1]]],
  flatline: ["Digital flatline", "Exact zeros or one stuck sample value.", [["hold_s", "Hold (s)", 0.1, 86400, 0.1]]],
  dc_offset: ["DC offset", "The mean beyond a fraction of full scale.",
    [["limit", "Limit (0–1 of full scale)", 0.0001, 1, 0.0001], ["hold_s", "Hold (s)", 0.1, 86400, 0.1]]],
  noise_floor: ["Noise floor shift", "The floor moved against the calibrated baseline (calibrate first).",
    [["shift_db", "Shift (dB)", 1, 100, 0.5], ["window_s", "Window (s)", 1, 3600, 1], ["hold_s", "Hold (s)", 0.1, 86400, 0.1]]],
  device_loss: ["Device loss", "The audio device went away.", []],
  format_change: ["Format change", "Sample rate or channel count not what it was.", []],
  disk_hours_left: ["Disk hours left", "Hours of recording the disk holds at the current rate.",
    [["warning_hours", "Warning under (h)", 0.1, 10000, 0.1], ["critical_hours", "Critical under (h)", 0.1, 10000, 0.1]]],
};
const CAL_WORDS = { requested: "waiting for the node", running: "measuring", completed: "done", failed: "failed" };

const policyUrl = (id) => `${POLICIES}/${encodeURIComponent(id)}`;
const fieldsText = (err) => (err.detail?.fields ? Object.entries(err.detail.fields).map(([k, v]) => `${k}: ${v}`).join("; ") : err.message);
const dbText = (v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)} dBFS`);

function assignmentText(a) {
  if (a.site) return `site ${a.site}`;
  if (a.channel) return `channel ${a.channel} of ${a.node_name ?? a.node_id}`;
  return `node ${a.node_name ?? a.node_id}`;
}

export function renderWatchdog(view) {
  const tbody = h("tbody");
  const caption = h("caption", {}, "Loading…");
  const error = h("p", { class: "error", role: "alert" });
  const load = async () => {
    try {
      const policies = await listAll(POLICIES);
      caption.textContent = `${plural(policies.length, "policy", "policies")}; a node runs the most specific: its channel's, its own, its site's, else the default`;
      fill(tbody, policies.map((p) => h("tr", { dataset: { policyId: p.id } },
        h("td", {}, h("a", { href: `#/watchdog/${encodeURIComponent(p.id)}` }, p.name), p.builtin ? h("span", { class: "hint" }, " built in") : null),
        h("td", {}, `${Object.values(p.detectors).filter((d) => d.enabled).length} of ${Object.keys(DETECTORS).length}`),
        h("td", { class: "col-assign" }, p.builtin ? "every other node" : p.assignments.length ? p.assignments.map(assignmentText).join(", ") : "nowhere yet"),
        h("td", {}, `v${p.version}`),
        h("td", { class: "col-updated" }, timeEl(p.updated_at)))));
      error.textContent = "";
    } catch (err) { error.textContent = `Could not load the policies: ${err.message}`; }
  };
  const name = h("input", { name: "name", autocomplete: "off", maxLength: 100, required: true });
  const createError = h("p", { class: "error", role: "alert" });
  const create = can("settings:manage") ? h("form", { class: "manage-form watchdog-create", "aria-label": "New watchdog policy", noValidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      createError.textContent = "";
      if (!name.value.trim()) { createError.textContent = "Name the policy, e.g. what it watches."; name.focus(); return; }
      try {
        const { data } = await api(POLICIES, { method: "POST", body: { name: name.value.trim() } });
        location.hash = `#/watchdog/${encodeURIComponent(data.id)}`;
      } catch (err) { createError.textContent = `Could not create the policy: ${fieldsText(err)}`; }
    } }, field("New policy", name, "Starts with the defaults; assign and tune it next."),
  h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Create")), createError) : null;
  fill(view, h("section", { class: "watchdog" },
    h("div", { class: "title-row" }, h("h2", {}, "Watchdog policies")),
    h("p", { class: "hint" }, "What each node watches on its signal chain, and what it does about it by itself."),
    create, error,
    h("div", { class: "table-wrap" }, h("table", { class: "watchdog-table" }, caption,
      h("thead", {}, h("tr", {}, [["Policy"], ["Detectors on"], ["Applies to", "col-assign"], ["Version"], ["Changed", "col-updated"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody))));
  load();
}

/** The remediation ladder of one detector: steps (add, remove, reorder), limits, cool-down, during recording. */
function ladderEditor(detector, remediation, manage) {
  const steps = (remediation?.steps ?? []).map((s) => ({ ...s }));
  const list = h("ol", { class: "wd-steps" });
  const add = h("button", { type: "button", class: "small", disabled: !manage }, "Add step");
  const limits = {
    max_per_hour: h("input", { type: "number", name: `${detector}.max_per_hour`, min: 0, max: 60, step: 1, value: remediation?.max_per_hour ?? 2, disabled: !manage }),
    max_per_day: h("input", { type: "number", name: `${detector}.max_per_day`, min: 0, max: 500, step: 1, value: remediation?.max_per_day ?? 6, disabled: !manage }),
    cooldown_s: h("input", { type: "number", name: `${detector}.cooldown_s`, min: 0, max: 86400, step: 1, value: remediation?.cooldown_s ?? 600, disabled: !manage }),
  };
  const during = h("input", { type: "checkbox", name: `${detector}.during_recording`, checked: Boolean(remediation?.during_recording), disabled: !manage });
  const draw = () => {
    fill(list, steps.length ? steps.map((step, i) => {
      const action = select(ACTIONS, step.action, { name: `${detector}.steps[${i}].action`, "aria-label": `Step ${i + 1} action`, disabled: !manage });
      action.addEventListener("change", () => { step.action = action.value; });
      const wait = h("input", { type: "number", name: `${detector}.steps[${i}].wait_s`, min: 1, max: 86400, step: 1, value: step.wait_s ?? 60,
        "aria-label": `Step ${i + 1} wait (s)`, disabled: !manage });
      wait.addEventListener("change", () => { step.wait_s = Number(wait.value); });
      const move = (to) => { steps.splice(to, 0, steps.splice(i, 1)[0]); draw(); };
      return h("li", { class: "wd-step" }, action, h("label", { class: "wd-wait" }, "then wait ", wait, " s"),
        manage ? [
          h("button", { type: "button", class: "small", disabled: i === 0, "aria-label": `Move step ${i + 1} up`, onclick: () => move(i - 1) }, "↑"),
          h("button", { type: "button", class: "small", disabled: i === steps.length - 1, "aria-label": `Move step ${i + 1} down`, onclick: () => move(i + 1) }, "↓"),
          h("button", { type: "button", class: "small", "aria-label": `Remove step ${i + 1}`, onclick: () => { steps.splice(i, 1); draw(); } }, "Remove"),
        ] : null);
    }) : h("li", { class: "hint wd-none" }, "No remediation: the event is only reported."));
    add.disabled = !manage || steps.length >= MAX_STEPS;
  };
  add.addEventListener("click", () => { steps.push({ action: steps.length ? steps[steps.length - 1].action : "restart-audio", wait_s: 60 }); draw(); });
  draw();
  const element = h("fieldset", { class: "wd-ladder" }, h("legend", {}, "Remediation ladder"), list, add,
    h("div", { class: "wd-limits" }, field("At most per hour", limits.max_per_hour), field("At most per day", limits.max_per_day),
      field("Cool-down (s)", limits.cooldown_s), h("label", { class: "check" }, during, "Also while recording")));
  const value = () => (steps.length ? {
    steps: steps.map((s) => ({ action: s.action, wait_s: Number(s.wait_s ?? 60) })),
    max_per_hour: Number(limits.max_per_hour.value), max_per_day: Number(limits.max_per_day.value),
    cooldown_s: Number(limits.cooldown_s.value), during_recording: during.checked,
  } : null);
  return { element, value };
}

/** One detector's settings: on or off, severity, its own numbers, its ladder. */
function detectorEditor(name, settings, manage) {
  const [title, about, numbers] = DETECTORS[name];
  const enabled = h("input", { type: "checkbox", name: `${name}.enabled`, checked: settings.enabled, disabled: !manage });
  const severity = select(SEVERITIES.map((s) => [s, s]), settings.severity, { name: `${name}.severity`, disabled: !manage });
  const inputs = numbers.map(([key, label, min, max, step]) => [key, field(label,
    h("input", { type: "number", name: `${name}.${key}`, min, max, step, value: settings[key], disabled: !manage }))]);
  const ladder = ladderEditor(name, settings.remediation, manage);
  const element = h("fieldset", { class: "wd-detector", dataset: { detector: name } },
    h("legend", {}, h("label", { class: "check" }, enabled, title)),
    h("p", { class: "hint" }, about),
    h("div", { class: "wd-numbers" }, field("Severity", severity), inputs.map(([, f]) => f)),
    ladder.element);
  const value = () => ({
    enabled: enabled.checked, severity: severity.value,
    ...Object.fromEntries(inputs.map(([key, f]) => [key, Number(f.querySelector("input").value)])),
    remediation: ladder.value(),
  });
  return { element, value };
}

/** Where the policy applies: a list to remove from, and a form to add a site, a node or one of its channels. */
function assignmentEditor(initial, nodes, sites, manage) {
  const assignments = initial.map(({ site, node_id, channel }) => (site ? { site } : channel ? { node_id, channel } : { node_id }));
  const names = new Map(nodes.map((n) => [n.id, n.name]));
  const list = h("ul", { class: "wd-assignments" });
  const kind = select([["site", "Site"], ["node", "Node"], ["channel", "A node's channel"]], "site", { name: "assign_kind", disabled: !manage });
  const site = select(sites.map((s) => [s.id, s.name && s.name !== s.id ? `${s.name} (${s.id})` : s.id]), "", { name: "assign_site", disabled: !manage });
  const node = select(nodes.map((n) => [n.id, n.site ? `${n.name} (${n.site})` : n.name]), "", { name: "assign_node", disabled: !manage });
  const channel = h("input", { name: "assign_channel", autocomplete: "off", maxLength: 64, placeholder: "e.g. Mic 1", disabled: !manage });
  const siteField = field("Site", site);
  const nodeField = field("Node", node);
  const channelField = field("Channel", channel, "The channel's name, as its channel map names it.");
  const sync = () => { siteField.hidden = kind.value !== "site"; nodeField.hidden = kind.value === "site"; channelField.hidden = kind.value !== "channel"; };
  kind.addEventListener("change", sync);
  const draw = () => fill(list, assignments.length ? assignments.map((a, i) => h("li", {}, assignmentText({ ...a, node_name: names.get(a.node_id) }),
    manage ? h("button", { type: "button", class: "small", "aria-label": `Remove ${assignmentText({ ...a, node_name: names.get(a.node_id) })}`,
      onclick: () => { assignments.splice(i, 1); draw(); } }, "Remove") : null))
    : h("li", { class: "hint" }, "Not assigned: it applies nowhere yet."));
  const add = h("button", { type: "button", class: "small", disabled: !manage, onclick: () => {
    const item = kind.value === "site" ? { site: site.value } : kind.value === "node" ? { node_id: node.value } : { node_id: node.value, channel: channel.value.trim() };
    if (Object.values(item).some((v) => !v)) { notify("Choose where to assign the policy first.", "error"); return; }
    if (!assignments.some((a) => JSON.stringify(a) === JSON.stringify(item))) assignments.push(item);
    draw();
  } }, "Add");
  sync();
  draw();
  const element = h("fieldset", { class: "wd-assign" }, h("legend", {}, "Applies to"), list,
    manage ? h("div", { class: "wd-add" }, field("Assign to", kind), siteField, nodeField, channelField, add) : null);
  return { element, value: () => assignments.map((a) => ({ ...a })) };
}

/** The measured baseline of one node, per channel. */
function baselineTable(baseline) {
  if (!baseline) return h("p", { class: "hint" }, "Not calibrated.");
  const rows = Object.entries(baseline.channels ?? {});
  return h("div", { class: "table-wrap" }, h("table", { class: "wd-baseline" },
    h("caption", {}, ["Measured ", timeEl(baseline.measured_at), ` over ${baseline.duration_s} s`,
      baseline.sample_rate ? `, ${baseline.sample_rate} Hz` : "", baseline.channel_count ? `, ${plural(baseline.channel_count, "channel")}` : ""]),
    h("thead", {}, h("tr", {}, ["Channel", "Noise floor", "Median RMS", "RMS p90", "Peak", "DC"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map(([name, c]) => h("tr", {}, h("td", {}, name), h("td", {}, dbText(c.noise_floor_dbfs)),
      h("td", {}, dbText(c.rms_median_dbfs)), h("td", {}, dbText(c.rms_p90_dbfs)), h("td", {}, dbText(c.peak_max_dbfs)),
      h("td", {}, c.dc_mean === null || c.dc_mean === undefined ? "—" : c.dc_mean.toFixed(4)))))));
}

export function renderWatchdogPolicy(view, id) {
  let gone = false;
  const timers = new Set();
  const manage = can("settings:manage");
  const heading = h("h2", {}, "Watchdog policy");
  const error = h("p", { class: "error", role: "alert" });
  const body = h("div", { class: "wd-body" });
  let policy = null;

  const calibrate = async (node, durationInput, progress, button) => {
    button.disabled = true;
    try {
      const { data } = await api(`${policyUrl(id)}/calibrate`, { method: "POST", body: { node_id: node.node_id, duration_s: Number(durationInput.value) } });
      const watch = async () => {
        if (gone) return;
        try {
          const { data: c } = await api(`${policyUrl(id)}/calibrations/${encodeURIComponent(data.id)}`);
          progress.value = c.state === "completed" || c.state === "failed" ? 1 : c.state === "running" && c.sent_at
            ? Math.min(0.99, (Date.now() - Date.parse(c.sent_at)) / 1000 / c.duration_s) : 0;
          fill(progress.nextElementSibling, CAL_WORDS[c.state] ?? c.state, c.error ? `: ${c.error}` : "");
          if (c.state === "completed") { notify(`${node.name}: calibrated.`); await load(); return; }
          if (c.state === "failed") { button.disabled = false; return; }
        } catch (err) { fill(progress.nextElementSibling, `could not follow: ${err.message}`); }
        const t = setTimeout(() => { timers.delete(t); watch(); }, POLL_MS);
        timers.add(t);
      };
      progress.hidden = false;
      watch();
    } catch (err) {
      button.disabled = false;
      notify(`Could not calibrate ${node.name}: ${err.message}`, "error");
    }
  };

  const nodesSection = (p) => {
    const rows = p.nodes.map((n) => {
      const duration = h("input", { type: "number", name: "duration_s", min: 1, max: 3600, step: 1, value: 60, "aria-label": `Calibration seconds for ${n.name}` });
      const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": `Calibration of ${n.name}` });
      const words = h("span", { class: "hint", role: "status" });
      const button = h("button", { type: "button", class: "small" }, "Calibrate");
      button.addEventListener("click", () => calibrate(n, duration, progress, button));
      const runs = n.applied ? `${n.applied.policy_id === null ? "built-in" : `v${n.applied.version}`}${n.applied.ok ? "" : " (refused)"}` : "not reported";
      return h("tr", { dataset: { nodeId: n.node_id } },
        h("td", {}, can("node:read") ? h("a", { href: `#/nodes/${encodeURIComponent(n.node_id)}` }, n.name) : n.name),
        h("td", { class: "col-site" }, n.site ?? "—"),
        h("td", {}, n.via === "channel" ? `channels ${n.channels.join(", ")}` : n.via),
        h("td", {}, h("span", { class: `state ${n.current ? "state-succeeded" : "state-sent"}` }, n.current ? `runs v${n.expected.version}` : `runs ${runs}`)),
        h("td", { class: "wd-cal" }, manage ? [duration, " s ", button, " ", progress, words] : null,
          baselineTable(p.baselines[n.node_id])));
    });
    return h("section", { class: "wd-nodes", "aria-labelledby": "wd-nodes-h" }, h("h3", { id: "wd-nodes-h" }, "Nodes running it"),
      h("div", { class: "table-wrap" }, h("table", { class: "wd-node-table" },
        h("caption", {}, rows.length ? plural(rows.length, "node") : "No node runs this policy now."),
        h("thead", {}, h("tr", {}, [["Node"], ["Site", "col-site"], ["Through"], ["Runs"], ["Calibration"]]
          .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))),
        h("tbody", {}, rows))));
  };

  const load = async () => {
    let nodes = [];
    let sites = [];
    try {
      [policy, nodes, sites] = await Promise.all([
        api(policyUrl(id)).then((b) => b.data),
        can("node:read") ? listAll("/api/v1/nodes") : [],
        listAll("/api/v1/sites").catch(() => []),
      ]);
    } catch (err) {
      if (err.status === 404) fill(view, h("section", {}, h("h2", {}, "Watchdog policy"), h("p", { class: "error", role: "alert" }, "There is no such policy."), h("a", { href: "#/watchdog" }, "All policies")));
      else error.textContent = `Could not load the policy: ${err.message}`;
      return;
    }
    if (gone) return;
    error.textContent = "";
    heading.textContent = `Watchdog policy ${policy.name}`;
    const mayChange = manage && policy.actions.update.allowed;
    const name = h("input", { name: "name", maxLength: 100, value: policy.name, disabled: !mayChange || policy.builtin });
    const description = h("input", { name: "description", maxLength: 500, value: policy.description, disabled: !mayChange });
    const detectors = Object.keys(DETECTORS).map((d) => [d, detectorEditor(d, policy.detectors[d], mayChange)]);
    const assign = policy.builtin ? null : assignmentEditor(policy.assignments, nodes, sites, mayChange);
    const saveError = h("p", { class: "error", role: "alert" });
    const form = h("form", { class: "wd-form", noValidate: true, "aria-label": "Watchdog policy", onsubmit: async (event) => {
      event.preventDefault();
      saveError.textContent = "";
      const changes = {
        version: policy.version,
        name: name.value.trim(), description: description.value.trim(),
        detectors: Object.fromEntries(detectors.map(([d, editor]) => [d, editor.value()])),
      };
      if (assign) changes.assignments = assign.value();
      const button = event.submitter ?? form.querySelector("button[type=submit]");
      button.disabled = true;
      try {
        const { data } = await api(policyUrl(id), { method: "PATCH", body: changes });
        notify(`Saved: version ${data.version}. Its nodes are told now.`);
        await load();
      } catch (err) {
        button.disabled = false;
        saveError.textContent = err.status === 409 ? `Not saved: ${err.message}` : `Not saved: ${fieldsText(err)}`;
      }
    } },
    h("div", { class: "wd-meta" }, field("Name", name), field("Description", description)),
    assign?.element ?? h("p", { class: "hint" }, "The built-in default applies to every node no other policy reaches."),
    h("div", { class: "wd-detectors" }, detectors.map(([, editor]) => editor.element)),
    mayChange ? h("div", { class: "button-row wd-save" }, h("button", { type: "submit", class: "primary" }, "Save"),
      policy.actions.delete.allowed ? h("button", { type: "button", class: "danger", onclick: async () => {
        if (!(await confirmAction("Delete this policy?", "Its nodes fall back to the next most specific policy at once.", "Delete", true))) return;
        try { await api(policyUrl(id), { method: "DELETE" }); notify("The policy is deleted."); location.hash = "#/watchdog"; } catch (err) { saveError.textContent = `Not deleted: ${err.message}`; }
      } }, "Delete") : null) : h("p", { class: "hint" }, manage ? policy.actions.update.reason : "Changing policies needs the permission settings:manage."),
    saveError);
    fill(body, h("dl", { class: "facts" }, h("dt", {}, "Version"), h("dd", {}, `v${policy.version}`), h("dt", {}, "Changed"), h("dd", {}, timeEl(policy.updated_at))),
      form, nodesSection(policy));
  };

  fill(view, h("section", { class: "watchdog" }, h("div", { class: "title-row" }, heading, h("a", { href: "#/watchdog" }, "All policies")), error, body));
  load();
  return () => { gone = true; for (const t of timers) clearTimeout(t); };
}

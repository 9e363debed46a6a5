// The forms of a notification channel: a new one (kind, name, where it goes, its secrets, what it is told, a test
// before saving), a saved one's details (PATCH), and replacing a saved one's configuration with its secrets (PUT
// /config, tested first with the saved secrets filling in those left empty). The hub's 400 shows at the fields.
import { api } from "./api.js";
import { field, fill, h, select } from "./dom.js";
import { fieldProblems } from "./field_problems.js";
import { CHANNELS, KIND_WORDS, channelUrl, configInputs, kindSelect, secretInputs, sendTest, testReport } from "./notify_kinds.js";
import { subscriptionEditor } from "./notify_subscription.js";

/** The site choice: hub-wide (null) or one site. */
export function siteSelect(sites, value, attrs = {}) {
  const options = [["", "Hub-wide (every site)"], ...sites.map((s) => [s.id, s.name ?? s.id])];
  if (value && !sites.some((s) => s.id === value)) options.push([value, value]);
  return select(options, value ?? "", { name: "site", ...attrs });
}

/** Why a write failed, at the fields the hub names and in one sentence; focuses the first field marked. */
function failed(form, slots, error, err, what) {
  const left = slots.mark(err.detail?.fields ?? {});
  error.textContent = err.status === 400 ? `${what}: ${left.length ? left.join("; ") : "see the fields marked."}` : `${what}: ${err.message}`;
  form.querySelector("[aria-invalid=true]")?.focus();
}

/** A "Send test" button that tests `body()` (unsaved) and shows the answer in `report`. */
function testButton(label, slots, error, report, body, form) {
  const button = h("button", { type: "button", onclick: async () => {
    error.textContent = "";
    slots.mark({});
    fill(report, h("p", { class: "hint" }, "Sending a test message…"));
    button.disabled = true;
    try {
      fill(report, testReport(await sendTest({ body: body() })));
    } catch (err) {
      fill(report);
      failed(form(), slots, error, err, "Not tested");
    }
    button.disabled = false;
  } }, label);
  return button;
}

/** The new-channel form; `onCreated(channel)` gets the created channel (with `signing_secret` for a webhook). */
export function newChannelForm({ specs, kinds, sites, onCreated }) {
  const slots = fieldProblems();
  const first = Object.keys(specs)[0] ?? "webhook";
  const kind = kindSelect(specs, first);
  const name = h("input", { name: "name", maxLength: 100, autocomplete: "off" });
  const description = h("input", { name: "description", maxLength: 500 });
  const site = siteSelect(sites, "");
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: true });
  const kindBox = h("fieldset", { class: "notify-kind" });
  const report = h("div", { class: "provider-report", role: "status", "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert" });
  const subscription = subscriptionEditor(null, { kinds, sites, slots });
  let config = null;
  let secrets = null;
  const drawKind = () => {
    const spec = specs[kind.value];
    config = configInputs(kind.value, spec, {}, slots);
    secrets = secretInputs(kind.value, spec, slots);
    fill(kindBox, h("legend", {}, `Where: ${specs[kind.value]?.label ?? KIND_WORDS[kind.value] ?? kind.value}`), config.element, secrets.element,
      kind.value === "webhook" ? h("p", { class: "hint" }, "The hub makes the signing secret when the channel is created and shows it once.") : null);
    fill(report);
  };
  kind.addEventListener("change", drawKind);
  drawKind();
  const form = h("form", { class: "upload-policy-form notify-channel-form", "aria-label": "Notification channel", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    slots.mark({});
    if (!name.value.trim()) { slots.mark({ name: "Name the channel, e.g. “On-call Slack”." }); name.focus(); return; }
    try {
      const { data } = await api(CHANNELS, { method: "POST", body: {
        name: name.value.trim(), kind: kind.value, site: site.value || null, description: description.value.trim(), enabled: enabled.checked,
        config: config.config(), secrets: secrets.secrets(), subscription: subscription.value(),
      } });
      onCreated(data);
    } catch (err) { failed(form, slots, error, err, "Not created"); }
  } },
  h("div", { class: "upload-form-grid" },
    slots.add("kind", field("Kind", kind)), slots.add("name", field("Name", name)),
    slots.add("site", field("Site", site)), slots.add("description", field("Description", description)),
    h("label", { class: "check" }, enabled, "Enabled")),
  kindBox,
  h("fieldset", {}, h("legend", {}, "What it is told"), subscription.element),
  h("div", { class: "button-row" },
    testButton("Send test", slots, error, report, () => ({ kind: kind.value, config: config.config(), secrets: secrets.secrets() }), () => form),
    h("button", { type: "submit", class: "primary" }, "Create channel")),
  report, error);
  return form;
}

/** A saved channel's name, description, site and enabled flag, saved with PATCH and its version. */
export function detailsForm(channel, { sites, manage, onSaved }) {
  const slots = fieldProblems();
  const off = !manage;
  const name = h("input", { name: "name", value: channel.name, maxLength: 100, autocomplete: "off", disabled: off });
  const description = h("input", { name: "description", value: channel.description ?? "", maxLength: 500, disabled: off });
  const site = siteSelect(sites, channel.site, { disabled: off });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: channel.enabled, disabled: off });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "upload-policy-form notify-details-form", "aria-label": "Channel details", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    slots.mark({});
    try {
      const { data } = await api(channelUrl(channel.id), { method: "PATCH", body: {
        name: name.value.trim(), description: description.value.trim(), site: site.value || null, enabled: enabled.checked, version: channel.version,
      } });
      onSaved(data);
    } catch (err) { failed(form, slots, error, err, "Not saved"); }
  } },
  h("div", { class: "upload-form-grid" },
    slots.add("name", field("Name", name)), slots.add("description", field("Description", description)),
    slots.add("site", field("Site", site)), slots.add("enabled", h("div", { class: "field" }, h("label", { class: "check" }, enabled, "Enabled")))),
  manage ? h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Save details")) : null,
  error);
  return form;
}

/** Replace a saved channel's configuration and secrets (PUT /config); tested first with the saved secrets filling in. */
export function configForm(channel, { specs, onReplaced }) {
  const slots = fieldProblems();
  const spec = specs[channel.kind] ?? { config: Object.keys(channel.config ?? {}), secrets: channel.secrets_set ?? [] };
  const config = configInputs(channel.kind, spec, channel.config, slots);
  const secrets = secretInputs(channel.kind, spec, slots, { set: channel.secrets_set ?? [] });
  const report = h("div", { class: "provider-report", role: "status", "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "upload-policy-form notify-config-form", "aria-label": "Replace configuration", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    slots.mark({});
    try {
      const { data } = await api(`${channelUrl(channel.id)}/config`, { method: "PUT", body: { config: config.config(), secrets: secrets.secrets() } });
      onReplaced(data);
    } catch (err) { failed(form, slots, error, err, "Not replaced"); }
  } },
  h("p", { class: "hint" }, "The configuration and secrets given here replace the saved ones as a whole: type every secret the channel needs.",
    channel.kind === "webhook" ? " A webhook gets a new signing secret, shown once." : ""),
  config.element, secrets.element,
  h("div", { class: "button-row" },
    testButton("Send test", slots, error, report, () => ({ kind: channel.kind, config: config.config(), secrets: secrets.secrets(), channel_id: channel.id }), () => form),
    h("button", { type: "submit", class: "primary" }, "Replace configuration")),
  report, error);
  return form;
}

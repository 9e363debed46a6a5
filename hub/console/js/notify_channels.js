// Notification channels: where the hub tells people that a box went quiet, offline, full or failed a recording.
// The list (with the hub-wide notification settings), a new channel (tested before it is saved), and one channel:
// its details, a test, enable/disable, delete, its configuration replaced (secrets write-only; a webhook's signing
// secret shown once), what it is told (the subscription) and its delivery log.
import { api, listAll } from "./api.js";
import { confirmAction, field, fill, h, notify, select, timeEl } from "./dom.js";
import { plural } from "./words.js";
import { CHANNELS, KIND_WORDS, canManage, channelUrl, fieldLabel, kindSpecs, loadSettings, sendTest, signingSecretBox, testReport } from "./notify_kinds.js";
import { configForm, detailsForm, newChannelForm } from "./notify_form.js";
import { eventKinds, loadSites, subscriptionForm } from "./notify_subscription.js";
import { deliveryLog } from "./notify_deliveries.js";
import { showSettings } from "./notify_settings.js";

// A webhook's signing secret from the create or rotate answer, shown once on the channel's page.
let shownOnce = null;
const enabledChip = (c) => h("span", { class: `state ${c.enabled ? "state-succeeded" : ""}` }, c.enabled ? "enabled" : "disabled");
const siteWords = (site) => site ?? "hub-wide";

function lastTestWords(t) {
  if (!t) return h("span", { class: "hint" }, "never tested");
  return h("span", { class: t.ok ? "" : "upload-error" }, t.ok ? "test delivered" : `test failed${t.message ? `: ${t.message}` : ""}`,
    t.at ? [" (", timeEl(t.at), ")"] : null);
}

// -- the list ---------------------------------------------------------------------------------------------

export function renderChannels(view) {
  let gone = false;
  const kind = select([["", "Any"], ...Object.entries(KIND_WORDS)], "", { name: "kind" });
  const enabled = select([["", "Any"], ["true", "Enabled"], ["false", "Disabled"]], "", { name: "enabled" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  const settingsSlot = h("div", { class: "notify-settings-slot" });
  const load = async () => {
    try {
      const channels = await listAll(CHANNELS, { kind: kind.value, enabled: enabled.value });
      if (gone) return;
      caption.textContent = channels.length ? plural(channels.length, "channel") : "No channel matches.";
      fill(tbody, channels.length ? channels.map((c) => h("tr", { dataset: { channelId: c.id } },
        h("td", {}, h("a", { href: `#/notify/channels/${encodeURIComponent(c.id)}` }, c.name), c.description ? h("div", { class: "hint" }, c.description) : null),
        h("td", {}, KIND_WORDS[c.kind] ?? c.kind),
        h("td", {}, siteWords(c.site)),
        h("td", { class: "col-where" }, h("span", { class: "wrap" }, c.target ?? "")),
        h("td", {}, enabledChip(c)),
        h("td", { class: "col-updated" }, c.last_delivery_at ? timeEl(c.last_delivery_at) : h("span", { class: "hint" }, "never")),
        h("td", { class: "col-test" }, lastTestWords(c.last_test))))
        : h("tr", {}, h("td", { colSpan: 7 }, kind.value || enabled.value ? "No channel matches these filters."
          : canManage() ? "No notification channels yet: add one with “New channel”." : "No notification channels yet.")));
      error.textContent = "";
    } catch (err) { if (!gone) error.textContent = `Could not load the channels: ${err.message}`; }
  };
  for (const el of [kind, enabled]) el.addEventListener("change", load);
  fill(view, h("section", { class: "upload-providers notify-channels" },
    h("div", { class: "title-row" }, h("h2", {}, "Notification channels"),
      h("a", { class: "button", href: "#/notifications" }, "My notifications"),
      canManage() ? h("a", { class: "button primary", href: "#/notify/channels/new" }, "New channel") : null),
    h("p", { class: "hint" }, "Where the hub sends word when a box goes quiet, offline or full, or a recording or upload fails."),
    settingsSlot,
    h("form", { class: "filters", role: "search", "aria-label": "Filter channels", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Kind", kind), field("Enabled", enabled), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "upload-provider-table notify-channel-table" }, caption,
      h("thead", {}, h("tr", {}, [["Channel"], ["Kind"], ["Site"], ["Target", "col-where"], ["State"], ["Last delivery", "col-updated"], ["Last test", "col-test"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody))));
  load();
  loadSettings().then((settings) => { if (!gone) showSettings(settingsSlot, settings); });
  return () => { gone = true; };
}

// -- a new channel ------------------------------------------------------------------------------------------

export function renderChannelNew(view) {
  let gone = false;
  fill(view, h("section", { class: "upload-providers notify-channels" }, h("h2", {}, "New notification channel"), h("p", { class: "hint" }, "Loading…")));
  (async () => {
    const [settings, sites] = await Promise.all([loadSettings(), loadSites()]);
    if (gone) return;
    fill(view, h("section", { class: "upload-providers notify-channels" },
      h("div", { class: "title-row" }, h("h2", {}, "New notification channel"), h("a", { class: "button", href: "#/notify/channels" }, "All channels")),
      h("p", { class: "hint" }, "“Send test” sends a test message with this configuration without saving it."),
      newChannelForm({ specs: kindSpecs(settings), kinds: eventKinds(settings), sites, onCreated: (saved) => {
        notify(`Channel “${saved.name}” created.`);
        if (saved.signing_secret) shownOnce = { id: saved.id, secret: saved.signing_secret };
        location.hash = `#/notify/channels/${encodeURIComponent(saved.id)}`;
      } })));
  })();
  return () => { gone = true; };
}

// -- one channel ----------------------------------------------------------------------------------------------

export function renderChannel(view, id) {
  let gone = false;
  let context = null;
  const manage = canManage();
  const draw = async () => {
    let detail;
    try {
      detail = (await api(channelUrl(id))).data;
    } catch (err) {
      if (!gone) fill(view, h("section", {}, h("h2", {}, "Notification channel"), h("p", { class: "error", role: "alert" }, err.status === 404 ? "There is no such channel." : `Could not load the channel: ${err.message}`)));
      return;
    }
    context ??= await Promise.all([loadSettings(), loadSites()]);
    if (gone) return;
    const [settings, sites] = context;
    const specs = kindSpecs(settings);
    const secret = shownOnce?.id === id ? shownOnce.secret : null;
    shownOnce = null;
    const actions = detail.actions ?? {};
    const allowed = (name) => actions[name]?.allowed !== false;
    const log = deliveryLog(id);
    const report = h("div", { class: "provider-report", role: "status", "aria-live": "polite" });
    const lastTest = h("p", { class: "provider-last-test" }, "Last test: ", lastTestWords(detail.last_test));
    const test = h("button", { type: "button", disabled: !allowed("test"), onclick: async () => {
      test.disabled = true;
      fill(report, h("p", { class: "hint" }, "Sending a test message…"));
      try {
        const result = await sendTest({ id });
        if (gone) return;
        fill(report, testReport(result));
        fill(lastTest, "Last test: ", lastTestWords({ ...result, at: result.at ?? new Date().toISOString() }));
        log.reload();
      } catch (err) { fill(report, h("p", { class: "error" }, `Not tested: ${err.message}`)); }
      test.disabled = false;
    } }, "Send test");
    const toggle = h("button", { type: "button", disabled: !allowed(detail.enabled ? "disable" : "enable"), onclick: async () => {
      toggle.disabled = true;
      try {
        await api(channelUrl(id), { method: "PATCH", body: { enabled: !detail.enabled, version: detail.version } });
        notify(`Channel “${detail.name}” ${detail.enabled ? "disabled" : "enabled"}.`);
        draw();
      } catch (err) { notify(`Could not change it: ${err.message}`, "error"); toggle.disabled = false; }
    } }, detail.enabled ? "Disable" : "Enable");
    const remove = h("button", { type: "button", class: "danger", disabled: !allowed("delete"), title: actions.delete?.reason ?? "", onclick: async () => {
      if (!await confirmAction("Delete this channel?", `“${detail.name}” gets no more notifications and those not sent yet are dropped; what was delivered stays in the history.`, "Delete", true)) return;
      try {
        await api(channelUrl(id), { method: "DELETE" });
        notify(`Channel “${detail.name}” deleted.`);
        location.hash = "#/notify/channels";
      } catch (err) { notify(`Could not delete: ${err.message}`, "error"); }
    } }, "Delete");
    const secrets = (detail.secrets_set ?? []).length
      ? `Secrets set: ${detail.secrets_set.map(fieldLabel).join(", ")} (never shown).` : "No secrets set.";
    const saved = (what) => (changed) => { notify(`${what} of “${changed.name}” saved.`); draw(); };
    fill(view, h("section", { class: "upload-providers notify-channels notify-channel" },
      h("div", { class: "title-row" }, h("h2", {}, detail.name), enabledChip(detail),
        h("a", { class: "button", href: `#/notifications?channel_id=${encodeURIComponent(id)}` }, "Its notifications"),
        h("a", { class: "button", href: "#/notify/channels" }, "All channels")),
      h("p", { class: "hint" }, `${KIND_WORDS[detail.kind] ?? detail.kind} to `, h("span", { class: "wrap notify-target" }, detail.target ?? ""),
        ` · ${siteWords(detail.site)} · version ${detail.version}, changed `, timeEl(detail.updated_at), "."),
      detail.description ? h("p", {}, detail.description) : null,
      secret ? signingSecretBox(secret) : null,
      h("p", { class: "provider-secrets" }, secrets),
      lastTest,
      h("p", { class: "notify-last-delivery" }, "Last delivery: ", detail.last_delivery_at ? timeEl(detail.last_delivery_at) : h("span", { class: "hint" }, "none yet")),
      manage ? h("div", { class: "button-row" }, test, toggle, remove) : null,
      report,
      h("h3", {}, "Details"),
      detailsForm(detail, { sites, manage, onSaved: saved("Details") }),
      manage ? h("details", { class: "provider-credentials notify-config" }, h("summary", {}, "Replace configuration"),
        configForm(detail, { specs, onReplaced: (changed) => {
          notify(`Configuration of “${changed.name}” replaced: send a test.`);
          if (changed.signing_secret) shownOnce = { id, secret: changed.signing_secret };
          draw();
        } })) : null,
      h("h3", {}, "What it is told"),
      subscriptionForm(detail, { kinds: eventKinds(settings), sites, manage, onSaved: () => draw() }),
      log.element));
  };
  draw();
  return () => { gone = true; };
}

// Notification channel kinds as the forms show them: the words for each kind, its configuration fields (shown) and
// its secret fields (write-only password inputs), a test's answer, and a webhook's signing secret shown once.
// Which fields a kind has comes from the hub (`GET /api/v1/settings/notifications` `kinds`); the words and input
// types here only dress them, so a field the hub adds later still gets a plain text box.
import { api, can } from "./api.js";
import { field, h, secretBox, select } from "./dom.js";

export const CHANNELS = "/api/v1/notification-channels";
export const SETTINGS = "/api/v1/settings/notifications";
export const channelUrl = (id) => `${CHANNELS}/${encodeURIComponent(id)}`;

export const KIND_WORDS = {
  webhook: "Webhook", slack: "Slack", discord: "Discord", teams: "Microsoft Teams", google_chat: "Google Chat",
  matrix: "Matrix", telegram: "Telegram", email: "Email", ntfy: "ntfy",
};

// What the hub knows when `settings/notifications` cannot be read: the contract's fields per kind.
const FALLBACK_KINDS = {
  webhook: { config: ["url"], secrets: ["signing_secret"] },
  slack: { config: [], secrets: ["webhook_url"] },
  discord: { config: [], secrets: ["webhook_url"] },
  teams: { config: [], secrets: ["webhook_url"] },
  google_chat: { config: [], secrets: ["webhook_url"] },
  matrix: { config: ["homeserver_url", "room_id"], secrets: ["access_token"] },
  telegram: { config: ["chat_id", "api_url"], secrets: ["bot_token"] },
  email: { config: ["host", "port", "security", "username", "sender", "recipients", "ca_pem"], secrets: ["password"] },
  ntfy: { config: ["server_url", "topic"], secrets: ["token"] },
};
// Secrets the hub makes itself and never takes from the caller (the hub's `generated` says so too).
const GENERATED = { webhook: ["signing_secret"] };

// Words for the fallback fields: name -> [label, hint, {type, default, choices}]. The hub's own words win.
const FIELD_WORDS = {
  url: ["URL", "Where the hub POSTs the signed JSON (http or https).", { type: "url" }],
  webhook_url: ["Webhook URL", "The incoming-webhook address the service gave you."],
  homeserver_url: ["Homeserver URL", "e.g. https://matrix.example.org", { type: "url" }],
  room_id: ["Room", "A room id, like !abc123:example.org"],
  access_token: ["Access token", null],
  chat_id: ["Chat id", "A number, or @channelname."],
  api_url: ["Bot API URL", "Only for a self-hosted Bot API server.", { type: "url", default: "https://api.telegram.org" }],
  bot_token: ["Bot token", "From @BotFather."],
  host: ["SMTP host", null],
  port: ["Port", "587 for STARTTLS, 465 for TLS", { type: "integer", default: 587 }],
  security: ["Security", null, { type: "choice", choices: ["starttls", "tls", "none"], default: "starttls" }],
  username: ["User name", "Leave empty when the server needs no login."],
  password: ["Password", "Only with a user name."],
  sender: ["From", "The sender address."],
  recipients: ["To", "1-20 addresses.", { type: "addresses" }],
  ca_pem: ["Private CA", "PEM certificate(s) to trust besides the system's.", { type: "pem" }],
  server_url: ["Server URL", "e.g. https://ntfy.sh", { type: "url" }],
  topic: ["Topic", null],
  token: ["Access token", "Sent as a Bearer token; leave empty for a public topic."],
  signing_secret: ["Signing secret", null],
};

const asField = (f) => {
  if (f && typeof f === "object") return { ...f, label: f.label ?? FIELD_WORDS[f.name]?.[0] ?? f.name };
  const [label, hint, opts = {}] = FIELD_WORDS[f] ?? [String(f).replaceAll("_", " "), null];
  return { name: f, label, hint, ...opts };
};
const fieldList = (list) => (Array.isArray(list) ? list : list && typeof list === "object" ? Object.keys(list) : []).map(asField).filter((f) => f.name);
const fieldWords = new Map();
export const fieldLabel = (name) => fieldWords.get(name) ?? FIELD_WORDS[name]?.[0] ?? name.replaceAll("_", " ");

/** The hub's notification settings (null when they cannot be read). */
export async function loadSettings() {
  try { return (await api(SETTINGS)).data; } catch { return null; }
}

/** kind -> {label, config: [field], secrets: [field]} from the settings' `kinds` (a list or an object), else the contract's. */
export function kindSpecs(settings) {
  const given = settings?.kinds;
  const entries = Array.isArray(given) ? given.map((k) => [k.kind ?? k.name, k]) : Object.entries(given ?? {});
  const specs = {};
  for (const [kind, spec] of entries.length ? entries : Object.entries(FALLBACK_KINDS)) {
    if (!kind) continue;
    specs[kind] = { label: spec?.label ?? KIND_WORDS[kind] ?? kind, config: fieldList(spec?.config), secrets: fieldList(spec?.secrets) };
    for (const f of [...specs[kind].config, ...specs[kind].secrets]) fieldWords.set(f.name, f.label);
  }
  return specs;
}

/** The secret fields a caller fills in for a kind (not those the hub makes). */
export const secretFields = (kind, spec) => (spec?.secrets ?? []).filter((f) => !f.generated && !(GENERATED[kind] ?? []).includes(f.name));

export const kindSelect = (specs, value, attrs = {}) => select(Object.entries(specs).map(([k, s]) => [k, s.label ?? KIND_WORDS[k] ?? k]), value, { name: "kind", ...attrs });

const optional = (f) => (f.required === false ? " (optional)" : "");

/** A kind's configuration fields, filled with `config`: {element, config()} (empty values left out). */
export function configInputs(kind, spec, config, slots, { off = false } = {}) {
  const c = config ?? {};
  const inputs = (spec?.config ?? []).map((f) => {
    const given = c[f.name] ?? f.default ?? "";
    let control;
    if (f.type === "choice" && Array.isArray(f.choices)) control = select(f.choices.map((v) => [v, v]), String(given), { name: f.name, disabled: off });
    else if (f.type === "addresses" || f.type === "pem") {
      control = h("textarea", { name: f.name, rows: 3, disabled: off, spellcheck: "false", class: "mono" }, Array.isArray(given) ? given.join("\n") : String(given));
    } else {
      control = h("input", { name: f.name, type: f.type === "integer" ? "number" : "text", value: String(given), disabled: off, autocomplete: "off", spellcheck: "false" });
    }
    const read = () => {
      const text = control.value.trim();
      if (f.type === "addresses") return text.split(/[\n,;]+/).map((x) => x.trim()).filter(Boolean);
      if (f.type === "integer") return text === "" ? null : Number(text);
      return f.type === "pem" && text ? `${text}\n` : text;
    };
    const hint = [f.hint, f.type === "addresses" ? "one per line" : null].filter(Boolean).join("; ");
    return { name: f.name, el: slots.add(`config.${f.name}`, field(`${f.label}${optional(f)}`, control, hint || null)), read };
  });
  return {
    element: inputs.length ? h("div", { class: "upload-form-grid" }, inputs.map((i) => i.el)) : null,
    config: () => Object.fromEntries(inputs.map((i) => [i.name, i.read()]).filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && !v.length))),
  };
}

/** A kind's write-only secrets as password inputs: {element, secrets()} (only those typed). `set`: names already set. */
export function secretInputs(kind, spec, slots, { set = [] } = {}) {
  const inputs = secretFields(kind, spec).map((f) => {
    const control = h("input", { type: "password", name: f.name, autocomplete: "new-password", spellcheck: "false",
      placeholder: set.includes(f.name) ? "set: type to replace" : null });
    const hint = `${f.hint ? `${f.hint}. ` : ""}Write-only: never shown again.`;
    return { name: f.name, el: slots.add(`secrets.${f.name}`, field(`${f.label}${optional(f)}`, control, hint)), control };
  });
  return {
    element: inputs.length ? h("div", { class: "upload-form-grid" }, inputs.map((i) => i.el)) : null,
    secrets: () => Object.fromEntries(inputs.filter((i) => i.control.value).map((i) => [i.name, i.control.value])),
  };
}

/** What a test answered: ok or not, the provider's message, the status and latency. */
export function testReport(result) {
  const ok = Boolean(result?.ok);
  const bits = [result?.status_code ? `status ${result.status_code}` : null,
    typeof result?.latency_ms === "number" ? `${Math.round(result.latency_ms)} ms` : null].filter(Boolean).join(", ");
  return h("div", { class: `provider-test notify-test ${ok ? "passed" : "failed"}`, dataset: { ok: String(ok) } },
    h("p", {}, h("span", { class: `state ${ok ? "state-succeeded" : "state-failed"}` }, ok ? "delivered" : "failed"), " ",
      h("strong", {}, ok ? "Test message delivered." : "Test message not delivered."),
      bits ? h("span", { class: "hint" }, ` (${bits})`) : null),
    result?.message ? h("p", { class: `wrap notify-test-message ${ok ? "" : "upload-error"}` }, result.message) : null);
}

/** Send a test: of a saved channel (`id`), or of an unsaved configuration (`body`); resolves to the answer. */
export async function sendTest({ id = null, body = null }) {
  const answer = id ? await api(`${channelUrl(id)}/test`, { method: "POST" }) : await api(`${CHANNELS}/test`, { method: "POST", body });
  return answer?.data ?? answer;
}

/** A webhook's signing secret, shown once, with how a receiver checks the signature. */
export function signingSecretBox(secret) {
  return h("div", { class: "notify-signing" },
    secretBox("Webhook signing secret", secret),
    h("p", { class: "hint" }, "Each request carries ", h("code", {}, "X-Hark-Signature: t=<unix time>,v1=<hex>"),
      ", where v1 is the HMAC-SHA256, keyed with this secret (the whole text, whsec_ included), of ",
      h("code", {}, "<t>.<raw body>"),
      ". Receivers should compare in constant time and refuse a t more than 300 s from their own clock (the replay window)."));
}

export const canManage = () => can("notify:manage");

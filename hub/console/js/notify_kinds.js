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
// Secrets the hub makes itself and never takes from the caller.
const GENERATED = { webhook: ["signing_secret"] };

// name -> [label, hint, {type, placeholder, options, rows, default}]
const FIELD_WORDS = {
  url: ["URL", "Where the hub POSTs the JSON (http or https)."],
  webhook_url: ["Webhook URL", "The incoming-webhook address the service gave you; it is a secret: write-only."],
  homeserver_url: ["Homeserver URL", null, { placeholder: "https://matrix.example.org" }],
  room_id: ["Room id", "Like !abc123:example.org", { placeholder: "!room:example.org" }],
  access_token: ["Access token", "The bot user's access token; write-only."],
  chat_id: ["Chat id", "A number, or @channelname."],
  api_url: ["Bot API URL", null, { default: "https://api.telegram.org" }],
  bot_token: ["Bot token", "From @BotFather; write-only."],
  host: ["SMTP host", null, { placeholder: "smtp.example.com" }],
  port: ["Port", null, { type: "number", default: 587 }],
  security: ["Security", null, { options: [["starttls", "STARTTLS"], ["tls", "TLS"], ["none", "None (plain)"]], default: "starttls" }],
  username: ["SMTP user", "Optional."],
  password: ["SMTP password", "Optional; write-only."],
  sender: ["From address", null, { placeholder: "hark@example.org" }],
  recipients: ["Recipients", "One address per line (1 to 20).", { rows: 3, list: true }],
  ca_pem: ["Private CA (PEM)", "Optional: the certificate of a private CA the SMTP server's certificate is signed by.", { rows: 3 }],
  server_url: ["Server URL", null, { placeholder: "https://ntfy.sh", default: "https://ntfy.sh" }],
  topic: ["Topic", null],
  token: ["Access token", "Optional, sent as a Bearer token; write-only."],
  signing_secret: ["Signing secret", null],
};

export const fieldLabel = (name) => FIELD_WORDS[name]?.[0] ?? name.replaceAll("_", " ");
const names = (list) => (Array.isArray(list) ? list : list && typeof list === "object" ? Object.keys(list) : [])
  .map((f) => (typeof f === "string" ? f : f?.name)).filter(Boolean);

/** The hub's notification settings (null when they cannot be read). */
export async function loadSettings() {
  try { return (await api(SETTINGS)).data; } catch { return null; }
}

/** kind -> {config: [names], secrets: [names]} from the settings' `kinds` (an object or a list), else the contract's. */
export function kindSpecs(settings) {
  const given = settings?.kinds;
  const specs = {};
  const entries = Array.isArray(given) ? given.map((k) => [k.kind ?? k.name, k]) : Object.entries(given ?? {});
  for (const [kind, spec] of entries) {
    if (!kind) continue;
    specs[kind] = { config: names(spec?.config ?? spec?.config_fields), secrets: names(spec?.secrets ?? spec?.secret_fields) };
  }
  return Object.keys(specs).length ? specs : FALLBACK_KINDS;
}

/** The secret fields a caller fills in for a kind (not those the hub makes). */
export const secretNames = (kind, spec) => (spec?.secrets ?? []).filter((s) => !(GENERATED[kind] ?? []).includes(s));

export const kindSelect = (specs, value, attrs = {}) => select(Object.keys(specs).map((k) => [k, KIND_WORDS[k] ?? k]), value, { name: "kind", ...attrs });

/** A kind's configuration fields, filled with `config`: {element, config()} (empty values left out). */
export function configInputs(kind, spec, config, slots, { off = false } = {}) {
  const c = config ?? {};
  const inputs = (spec?.config ?? []).map((name) => {
    const [label, hint, opts = {}] = FIELD_WORDS[name] ?? [name.replaceAll("_", " "), null];
    const given = c[name] ?? opts.default ?? "";
    let control;
    if (opts.options) control = select(opts.options, String(given), { name, disabled: off });
    else if (opts.rows) control = h("textarea", { name, rows: opts.rows, disabled: off, spellcheck: "false", class: "mono" }, Array.isArray(given) ? given.join("\n") : String(given));
    else control = h("input", { name, type: opts.type ?? "text", value: String(given), disabled: off, autocomplete: "off", spellcheck: "false", placeholder: opts.placeholder ?? null });
    const read = () => {
      const text = control.value.trim();
      if (opts.list) return text.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
      if (opts.type === "number") return text === "" ? null : Number(text);
      return text;
    };
    return { name, el: slots.add(`config.${name}`, field(label, control, hint)), read, list: Boolean(opts.list) };
  });
  return {
    element: inputs.length ? h("div", { class: "upload-form-grid" }, inputs.map((i) => i.el)) : null,
    config: () => Object.fromEntries(inputs.map((i) => [i.name, i.read()]).filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && !v.length))),
  };
}

/** A kind's write-only secrets as password inputs: {element, secrets()} (only those typed). `set`: names already set. */
export function secretInputs(kind, spec, slots, { set = [] } = {}) {
  const inputs = secretNames(kind, spec).map((name) => {
    const [label, hint] = FIELD_WORDS[name] ?? [name.replaceAll("_", " "), "Write-only."];
    const control = h("input", { type: "password", name, autocomplete: "new-password", spellcheck: "false",
      placeholder: set.includes(name) ? "set (type to replace)" : null });
    return { name, el: slots.add(`secrets.${name}`, field(label, control, hint ?? "Write-only: never shown again.")), control };
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

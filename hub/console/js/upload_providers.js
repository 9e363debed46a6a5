// Upload providers: where recordings are copied off-site (an S3-compatible bucket, an SFTP server, a directory on
// the hub such as a mounted share). A configuration is tested before it is saved (each step, and why one failed);
// secrets are write-only: the hub says which are set, never what they are, and they are replaced as a whole.
import { api, can, listAll } from "./api.js";
import { confirmAction, field, fill, h, notify, select, timeEl } from "./dom.js";
import { plural } from "./words.js";
import { fieldProblems } from "./field_problems.js";

export const PROVIDERS = "/api/v1/settings/upload-providers";
const KIND_WORDS = { s3: "S3-compatible bucket", sftp: "SFTP server", local: "Directory on the hub" };
const STEP_WORDS = {
  config: "Configuration", reach: "Reach", authenticate: "Sign in", write: "Write a test object",
  read: "Read it back", verify: "Verify", delete: "Delete it", complete: "Complete",
};
const SECRET_WORDS = { secret_access_key: "secret access key", private_key: "private key", passphrase: "key passphrase", password: "password" };
const providerUrl = (id) => `${PROVIDERS}/${encodeURIComponent(id)}`;

/** Where a provider copies to, in a few words. */
export function whereWords(p) {
  const c = p.config ?? {};
  if (p.kind === "s3") return `${c.bucket}${c.prefix ? `/${c.prefix.replace(/^\/+|\/+$/g, "")}` : ""} at ${c.endpoint_url || `AWS ${c.region ?? ""}`}`;
  if (p.kind === "sftp") return `${c.username}@${c.host}${c.port && c.port !== 22 ? `:${c.port}` : ""}:${c.base_path}`;
  return c.path ?? "";
}

function lastTestWords(t) {
  if (!t) return "never tested";
  return t.ok ? "test passed" : `test failed at “${STEP_WORDS[t.step] ?? t.step}”`;
}

// -- the list ---------------------------------------------------------------------------------------------

export function renderProviders(view) {
  let gone = false;
  const q = h("input", { type: "search", name: "q", placeholder: "name or description" });
  const kind = select([["", "Any"], ["s3", KIND_WORDS.s3], ["sftp", KIND_WORDS.sftp], ["local", KIND_WORDS.local]], "", { name: "kind" });
  const enabled = select([["", "Any"], ["true", "Enabled"], ["false", "Disabled"]], "", { name: "enabled" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  const load = async () => {
    try {
      const providers = await listAll(PROVIDERS, { q: q.value.trim(), kind: kind.value, enabled: enabled.value });
      if (gone) return;
      caption.textContent = providers.length ? plural(providers.length, "provider") : "No provider matches.";
      fill(tbody, providers.length ? providers.map((p) => h("tr", { dataset: { providerId: p.id } },
        h("td", {}, h("a", { href: `#/offsite/providers/${encodeURIComponent(p.id)}` }, p.name),
          p.description ? h("div", { class: "hint" }, p.description) : null),
        h("td", {}, KIND_WORDS[p.kind] ?? p.kind),
        h("td", { class: "col-where" }, h("span", { class: "wrap" }, whereWords(p))),
        h("td", {}, h("span", { class: `state ${p.enabled ? "state-succeeded" : ""}` }, p.enabled ? "enabled" : "disabled")),
        h("td", { class: "col-test" }, h("span", { class: p.last_test && !p.last_test.ok ? "upload-error" : "" }, lastTestWords(p.last_test))),
        h("td", { class: "col-updated" }, timeEl(p.updated_at))))
        : h("tr", {}, h("td", { colSpan: 6 }, can("settings:manage") ? "No upload providers yet: add one with “New provider”." : "No upload providers yet.")));
      error.textContent = "";
    } catch (err) { if (!gone) error.textContent = `Could not load the providers: ${err.message}`; }
  };
  for (const el of [kind, enabled]) el.addEventListener("change", load);
  fill(view, h("section", { class: "upload-providers" },
    h("div", { class: "title-row" }, h("h2", {}, "Upload providers"),
      h("a", { class: "button", href: "#/offsite/policies" }, "Policies"),
      h("a", { class: "button", href: "#/uploads" }, "Upload queue"),
      can("settings:manage") ? h("a", { class: "button primary", href: "#/offsite/providers/new" }, "New provider") : null),
    h("p", { class: "hint" }, "Where recordings are copied off-site. Upload policies say which recordings go where."),
    h("form", { class: "filters", role: "search", "aria-label": "Filter providers", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("Search", q), field("Kind", kind), field("Enabled", enabled), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "upload-provider-table" }, caption,
      h("thead", {}, h("tr", {}, [["Provider"], ["Kind"], ["Where", "col-where"], ["State"], ["Last test", "col-test"], ["Changed", "col-updated"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody))));
  load();
  return () => { gone = true; };
}

// -- a test report ------------------------------------------------------------------------------------------

/** A test report as a list of its steps: each passed or failed, with the hub's message. */
export function reportList(report) {
  const summary = report.ok ? "Test passed: every step worked." : `Test failed at “${STEP_WORDS[report.failed_step] ?? report.failed_step}”.`;
  return h("div", { class: `provider-test ${report.ok ? "passed" : "failed"}` },
    h("p", { class: report.ok ? "" : "upload-error" }, h("strong", {}, summary)),
    h("ol", { class: "provider-steps" }, report.steps.map((s) => h("li", { class: s.ok ? "step-ok" : "step-failed", dataset: { step: s.step } },
      h("span", { class: `state ${s.ok ? "state-succeeded" : "state-failed"}` }, s.ok ? "ok" : "failed"), " ",
      h("strong", {}, STEP_WORDS[s.step] ?? s.step), ": ", h("span", { class: "wrap" }, s.message), h("span", { class: "hint" }, ` (${s.ms} ms)`)))));
}

// -- the form for one kind ----------------------------------------------------------------------------------

function text(name, value = "", attrs = {}) {
  return h("input", { name, value: value ?? "", autocomplete: "off", spellcheck: "false", ...attrs });
}

function secretInput(name) {
  return h("input", { type: "password", name, autocomplete: "new-password", spellcheck: "false" });
}

/** The kind's config fields: {element, config()}. */
function kindFields(kind, config, slots, { off }) {
  const c = config ?? {};
  if (kind === "s3") {
    const endpoint = text("endpoint_url", c.endpoint_url, { disabled: off, placeholder: "https://s3.example.com (empty: AWS)" });
    const region = text("region", c.region ?? "us-east-1", { disabled: off });
    const bucket = text("bucket", c.bucket, { disabled: off, required: true });
    const prefix = text("prefix", c.prefix, { disabled: off, placeholder: "recordings/ (optional)" });
    const pathStyle = h("input", { type: "checkbox", name: "path_style", checked: Boolean(c.path_style), disabled: off });
    const keyId = text("access_key_id", c.access_key_id, { disabled: off });
    const sse = select([["", "None"], ["AES256", "AES256 (S3-managed keys)"], ["aws:kms", "aws:kms (KMS key)"]], c.sse ?? "", { name: "sse", disabled: off });
    const kms = text("sse_kms_key_id", c.sse_kms_key_id, { disabled: off, placeholder: "with aws:kms" });
    const storage = text("storage_class", c.storage_class, { disabled: off, placeholder: "STANDARD (empty: the bucket's default)" });
    return {
      element: h("div", { class: "upload-form-grid" },
        slots.add("config.endpoint_url", field("Endpoint URL", endpoint, "AWS, MinIO, R2, Wasabi…: the S3 endpoint; empty for AWS.")),
        slots.add("config.region", field("Region", region)),
        slots.add("config.bucket", field("Bucket", bucket)),
        slots.add("config.prefix", field("Key prefix", prefix)),
        slots.add("config.access_key_id", field("Access key id", keyId)),
        slots.add("config.sse", field("Server-side encryption", sse)),
        slots.add("config.sse_kms_key_id", field("KMS key id", kms)),
        slots.add("config.storage_class", field("Storage class", storage)),
        slots.add("config.path_style", h("div", { class: "field" }, h("label", { class: "check" }, pathStyle, "Path-style addressing (MinIO and most self-hosted servers)")))),
      config: () => ({
        endpoint_url: endpoint.value.trim() || null, region: region.value.trim(), bucket: bucket.value.trim(), prefix: prefix.value.trim(),
        path_style: pathStyle.checked, access_key_id: keyId.value.trim(), sse: sse.value || null,
        ...(kms.value.trim() ? { sse_kms_key_id: kms.value.trim() } : {}), storage_class: storage.value.trim() || null,
      }),
    };
  }
  if (kind === "sftp") {
    const host = text("host", c.host, { disabled: off });
    const port = h("input", { type: "number", name: "port", min: 1, max: 65535, step: 1, value: c.port ?? 22, disabled: off });
    const user = text("username", c.username, { disabled: off });
    const hostKey = h("textarea", { name: "known_host_key", rows: 2, disabled: off, spellcheck: "false", class: "mono" }, c.known_host_key ?? "");
    const base = text("base_path", c.base_path, { disabled: off, placeholder: "/srv/recordings" });
    return {
      element: h("div", {},
        h("div", { class: "upload-form-grid" },
          slots.add("config.host", field("Host", host)), slots.add("config.port", field("Port", port)),
          slots.add("config.username", field("User", user)), slots.add("config.base_path", field("Directory on the server", base))),
        slots.add("config.known_host_key", field("Server's host key", hostKey, "Pinned: a server offering another key is refused. Get it with: ssh-keyscan -t ed25519 host"))),
      config: () => ({ host: host.value.trim(), port: Number(port.value || 22), username: user.value.trim(), known_host_key: hostKey.value.trim(), base_path: base.value.trim() }),
    };
  }
  const path = text("path", c.path, { disabled: off, placeholder: "/mnt/archive" });
  return {
    element: h("div", { class: "upload-form-grid" }, slots.add("config.path", field("Directory", path, "An absolute path on the hub, e.g. where an NFS or SMB share is mounted."))),
    config: () => ({ path: path.value.trim() }),
  };
}

/** The kind's write-only secret fields: {element, secrets()} (null element for a kind without secrets). */
function secretFields(kind, slots) {
  if (kind === "s3") {
    const secret = secretInput("secret_access_key");
    return {
      element: h("div", { class: "upload-form-grid" }, slots.add("secrets.secret_access_key", field("Secret access key", secret, "Write-only: never shown again."))),
      secrets: () => (secret.value ? { secret_access_key: secret.value } : {}),
    };
  }
  if (kind === "sftp") {
    const key = h("textarea", { name: "private_key", rows: 4, spellcheck: "false", class: "mono", autocomplete: "off" });
    const passphrase = secretInput("passphrase");
    const password = secretInput("password");
    const either = slots.add("secrets", h("div", { class: "field" }));
    return {
      element: h("div", {}, h("div", { class: "upload-form-grid" },
        slots.add("secrets.private_key", field("Private key", key, "OpenSSH or PEM; write-only.")),
        slots.add("secrets.passphrase", field("Key passphrase", passphrase, "If the key has one.")),
        slots.add("secrets.password", field("Password", password, "Instead of, or besides, a key."))), either),
      secrets: () => Object.fromEntries([["private_key", key.value.trim() ? `${key.value.trim()}\n` : ""], ["passphrase", passphrase.value], ["password", password.value]].filter(([, v]) => v)),
    };
  }
  return { element: null, secrets: () => ({}) };
}

/** The form of a new provider (kind chosen) or of a saved one (kind fixed, no secrets: those are replaced apart). */
function providerForm(provider, { manage, onSaved }) {
  const p = provider ?? { kind: "s3", name: "", description: "", enabled: true, config: {}, rate_limit_bps: null, max_concurrency: 2 };
  const off = !manage;
  const slots = fieldProblems();
  const kind = select(Object.entries(KIND_WORDS), p.kind, { name: "kind", disabled: off || Boolean(provider) });
  const name = h("input", { name: "name", value: p.name, maxLength: 100, autocomplete: "off", disabled: off });
  const description = h("input", { name: "description", value: p.description, maxLength: 500, disabled: off });
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: p.enabled, disabled: off });
  const rate = h("input", { type: "number", name: "rate_limit", min: 0.01, step: 0.01, value: p.rate_limit_bps ? String(p.rate_limit_bps / 1e6) : "", disabled: off, placeholder: "no limit" });
  const concurrency = h("input", { type: "number", name: "max_concurrency", min: 1, max: 16, step: 1, value: p.max_concurrency, disabled: off });
  const kindBox = h("fieldset", { class: "provider-kind" }, h("legend", {}, "Where"));
  const report = h("div", { class: "provider-report", role: "status", "aria-live": "polite" });
  const error = h("p", { class: "error", role: "alert" });
  let fields = null;
  let secrets = null;
  const drawKind = () => {
    fields = kindFields(kind.value, kind.value === p.kind ? p.config : {}, slots, { off });
    secrets = provider ? { element: null, secrets: () => ({}) } : secretFields(kind.value, slots);
    fill(kindBox, h("legend", {}, KIND_WORDS[kind.value]), fields.element, secrets.element);
    fill(report);
  };
  kind.addEventListener("change", drawKind);
  drawKind();

  const body = () => ({
    kind: kind.value, name: name.value.trim(), description: description.value.trim(), enabled: enabled.checked,
    config: fields.config(), rate_limit_bps: rate.value ? Math.round(Number(rate.value) * 1e6) : null, max_concurrency: Number(concurrency.value || 2),
  });
  const failed = (err, what) => {
    const left = slots.mark(err.detail?.fields ?? {});
    error.textContent = err.status === 400 ? `${what}: ${left.length ? left.join("; ") : "see the fields marked."}` : `${what}: ${err.message}`;
    form.querySelector("[aria-invalid=true]")?.focus();
  };
  const testButton = h("button", { type: "button", onclick: async () => {
    error.textContent = "";
    slots.mark({});
    fill(report, h("p", { class: "hint" }, "Testing…"));
    testButton.disabled = true;
    try {
      const { name: _name, ...unsaved } = body();
      const { data } = await api(`${PROVIDERS}/test`, { method: "POST", body: { ...unsaved, secrets: secrets.secrets(), provider_id: provider?.id } });
      fill(report, reportList(data));
    } catch (err) {
      fill(report);
      failed(err, "Not tested");
    }
    testButton.disabled = false;
  } }, provider ? "Test these settings" : "Test");
  const form = h("form", { class: "upload-policy-form upload-provider-form", "aria-label": "Upload provider", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    slots.mark({});
    const value = body();
    if (!value.name) { slots.mark({ name: "Name the provider, e.g. “Archive bucket”." }); name.focus(); return; }
    try {
      const saved = provider
        ? (await api(providerUrl(provider.id), { method: "PATCH", body: { ...value, kind: undefined, version: provider.version } })).data
        : (await api(PROVIDERS, { method: "POST", body: { ...value, secrets: secrets.secrets() } })).data;
      onSaved(saved);
    } catch (err) { failed(err, "Not saved"); }
  } },
  h("div", { class: "upload-form-grid" },
    slots.add("kind", field("Kind", kind)), slots.add("name", field("Name", name)), slots.add("description", field("Description", description)),
    h("label", { class: "check" }, enabled, "Enabled")),
  kindBox,
  h("div", { class: "upload-form-grid" },
    slots.add("rate_limit_bps", field("Rate limit (MB/s)", rate, "Across this provider's uploads; empty: no limit.")),
    slots.add("max_concurrency", field("Uploads at once", concurrency))),
  manage ? h("div", { class: "button-row" },
    testButton,
    h("button", { type: "submit", class: "primary" }, provider ? "Save changes" : "Create provider")) : null,
  report, error);
  return form;
}

export function renderProviderNew(view) {
  fill(view, h("section", { class: "upload-providers" },
    h("div", { class: "title-row" }, h("h2", {}, "New upload provider"), h("a", { class: "button", href: "#/offsite/providers" }, "All providers")),
    h("p", { class: "hint" }, "“Test” writes, reads back and deletes a small object with this configuration, without saving it."),
    providerForm(null, { manage: can("settings:manage"), onSaved: (saved) => {
      notify(`Provider “${saved.name}” created.`);
      location.hash = `#/offsite/providers/${encodeURIComponent(saved.id)}`;
    } })));
  return null;
}

// -- one provider ---------------------------------------------------------------------------------------------

function credentialsForm(detail, onSaved) {
  const slots = fieldProblems();
  const fields = secretFields(detail.kind, slots);
  const error = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "upload-provider-credentials", "aria-label": "Replace credentials", noValidate: true, onsubmit: async (event) => {
    event.preventDefault();
    slots.mark({});
    error.textContent = "";
    try {
      const { data } = await api(`${providerUrl(detail.id)}/credentials`, { method: "PUT", body: fields.secrets() });
      onSaved(data);
    } catch (err) {
      const left = slots.mark(err.detail?.fields ?? {});
      error.textContent = err.status === 400 ? `Not replaced: ${left.length ? left.join("; ") : "see the fields marked."}` : `Not replaced: ${err.message}`;
    }
  } },
  h("p", { class: "hint" }, "The new secrets replace all the old ones; leave a field empty to remove that secret."),
  fields.element,
  h("div", { class: "button-row" }, h("button", { type: "submit", class: "primary" }, "Replace credentials")), error);
  return form;
}

export function renderProvider(view, id) {
  let gone = false;
  const manage = can("settings:manage");
  const draw = async (testReport = null) => {
    let detail;
    try {
      detail = (await api(providerUrl(id))).data;
    } catch (err) {
      if (!gone) fill(view, h("section", {}, h("h2", {}, "Upload provider"), h("p", { class: "error", role: "alert" }, err.status === 404 ? "There is no such provider." : `Could not load the provider: ${err.message}`)));
      return;
    }
    if (gone) return;
    const report = h("div", { class: "provider-report", role: "status", "aria-live": "polite" }, testReport ? reportList(testReport) : null);
    const test = h("button", { type: "button", onclick: async () => {
      test.disabled = true;
      fill(report, h("p", { class: "hint" }, "Testing…"));
      try {
        const { data } = await api(`${providerUrl(id)}/test`, { method: "POST" });
        if (!gone) draw(data);
      } catch (err) { fill(report, h("p", { class: "error" }, `Not tested: ${err.message}`)); test.disabled = false; }
    } }, "Test again");
    const remove = h("button", { type: "button", class: "danger", disabled: !detail.actions.delete.allowed, title: detail.actions.delete.reason ?? "", onclick: async () => {
      if (!await confirmAction("Delete this provider?", `“${detail.name}” is removed with its uploads not done yet; copies already made stay where they are.`, "Delete", true)) return;
      try {
        await api(providerUrl(id), { method: "DELETE" });
        notify(`Provider “${detail.name}” deleted.`);
        location.hash = "#/offsite/providers";
      } catch (err) { notify(`Could not delete: ${err.message}`, "error"); }
    } }, "Delete");
    const secrets = detail.secrets_set.length
      ? `Credentials set: ${detail.secrets_set.map((s) => SECRET_WORDS[s] ?? s).join(", ")} (never shown).`
      : detail.kind === "local" ? "No credentials: a directory on the hub." : "No credentials set.";
    const last = detail.last_test;
    fill(view, h("section", { class: "upload-providers" },
      h("div", { class: "title-row" }, h("h2", {}, detail.name),
        h("span", { class: `state ${detail.enabled ? "state-succeeded" : ""}` }, detail.enabled ? "enabled" : "disabled"),
        h("a", { class: "button", href: `#/uploads?provider_id=${encodeURIComponent(id)}` }, "Its uploads"),
        h("a", { class: "button", href: "#/offsite/providers" }, "All providers")),
      h("p", { class: "hint" }, `${KIND_WORDS[detail.kind]}: `, h("span", { class: "wrap" }, whereWords(detail)), `. Version ${detail.version}, changed `, timeEl(detail.updated_at), "."),
      h("p", { class: "provider-secrets" }, secrets),
      h("p", { class: "provider-last-test" }, last ? [`Last test: ${lastTestWords(last)}`, last.ok ? "" : ` (${last.message})`, ", ", timeEl(last.at), "."] : "Not tested since it was saved or its credentials were replaced."),
      detail.policies.length
        ? h("p", {}, "Used by: ", detail.policies.map((x, i) => [i ? ", " : "", h("a", { href: `#/offsite/policies/${encodeURIComponent(x.id)}` }, x.name)]))
        : h("p", { class: "hint" }, "No upload policy uses it yet."),
      manage ? h("div", { class: "button-row" }, test, remove) : null,
      manage && !detail.actions.delete.allowed ? h("p", { class: "hint" }, `Delete: ${detail.actions.delete.reason}.`) : null,
      report,
      providerForm(detail, { manage, onSaved: (saved) => { notify(`Provider “${saved.name}” saved (version ${saved.version}).`); draw(); } }),
      manage && detail.actions.credentials.allowed ? h("details", { class: "provider-credentials" }, h("summary", {}, "Replace credentials"),
        credentialsForm(detail, (saved) => { notify(`Credentials of “${saved.name}” replaced: test again.`); draw(); })) : null));
  };
  draw();
  return () => { gone = true; };
}

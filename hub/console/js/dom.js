// Small DOM helpers: element building, formatting, dialogs and notices. No framework.

/** Build an element: h("button", {class: "x", onclick: fn, "aria-label": "..."}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let fieldIds = 0;

/** A labelled control: the label is tied to the control by id. */
export function field(label, control, hint = null) {
  if (!control.id) control.id = `f${++fieldIds}`;
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint && h("small", { class: "hint" }, hint));
}

/** A <select> from [value, label] pairs; the first pair is usually ["", "any"]. */
export function select(options, value = "", attrs = {}) {
  const el = h("select", attrs, options.map(([v, label]) => h("option", { value: v }, label)));
  el.value = value;
  return el;
}

export function uid(prefix = "id") {
  return `${prefix}${++fieldIds}`;
}

// -- formatting --------------------------------------------------------------------------

// Every time shown says its zone: the browser's (or UTC when the user chose so on "Me"), or a
// site's own zone where one is given; the UTC time is in the title.
const ZONE_SETTING = "hark.timeZone";

/** "local" (the browser's zone) or "UTC", as chosen on the "Me" page. */
export function zonePreference() {
  try { return localStorage.getItem(ZONE_SETTING) === "UTC" ? "UTC" : "local"; } catch { return "local"; }
}

export function setZonePreference(value) {
  try { localStorage.setItem(ZONE_SETTING, value === "UTC" ? "UTC" : "local"); } catch { /* private mode */ }
}

function validZone(zone) {
  if (!zone) return null;
  try { new Intl.DateTimeFormat(undefined, { timeZone: zone }); return zone; } catch { return null; }
}

/** A date and time with its zone ("6 Dec 2026, 14:03:07 CET"); `zone`: an IANA zone such as a site's. */
export function when(iso, { zone = null, seconds: withSeconds = true } = {}) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const timeZone = validZone(zone) ?? (zonePreference() === "UTC" ? "UTC" : undefined);
  return date.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    second: withSeconds ? "2-digit" : undefined, timeZone, timeZoneName: "short",
  });
}

/** The UTC form of a time, for titles ("2026-12-06 13:03:07 UTC"). */
export function utcText(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** A <time> element: the time with its zone, UTC on hover. */
export function timeEl(iso, options = {}) {
  if (!iso) return document.createTextNode("—");
  return h("time", { datetime: iso, title: utcText(iso) }, when(iso, options));
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.round((now - new Date(iso).getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function seconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function db(value, unit = "dB") {
  return value === null || value === undefined ? "—" : `${value.toFixed(1)} ${unit}`;
}

export function pct(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value)} %`;
}

/** A value from a JSON document, shown as text (objects compactly). */
export function show(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// -- dialogs and notices -------------------------------------------------------------------

/** Ask before doing something; resolves true when confirmed. Keyboard: Esc cancels. */
export function confirmAction(title, message, confirmLabel = "Confirm", danger = false) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "confirm-title" });
    const done = (ok) => { dialog.close(); dialog.remove(); resolve(ok); };
    const cancel = h("button", { type: "button", onclick: () => done(false) }, "Cancel");
    fill(
      dialog,
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, message),
      h("div", { class: "buttons" }, cancel, h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => done(true) }, confirmLabel)),
    );
    dialog.addEventListener("cancel", (event) => { event.preventDefault(); done(false); });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** A secret shown once, with a copy button. */
export function secretBox(label, secret) {
  const input = h("input", { readOnly: true, value: secret, class: "secret", "aria-label": label, spellcheck: "false" });
  const status = h("span", { role: "status", class: "hint" });
  const copy = h("button", { type: "button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(secret);
      status.textContent = "Copied.";
    } catch {
      input.select();
      status.textContent = "Selected: press Ctrl+C to copy.";
    }
  } }, "Copy");
  return h("div", { class: "secret-box", role: "group", "aria-label": label },
    h("p", {}, h("strong", {}, label), " — shown only this once; store it now."),
    h("div", { class: "row" }, input, copy, status));
}

/** A short notice in the page's live region. */
export function notify(message, kind = "info") {
  const region = document.getElementById("notices");
  const item = h("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, message,
    h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: () => item.remove() }, "×"));
  region.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 12000 : 5000);
}

// -- the view's state in the address (filters, sort), so a view can be bookmarked and shared ----

/** The parameters after "?" in the hash ("#/fleet?status=offline" -> URLSearchParams). */
export function hashParams() {
  const hash = location.hash.replace(/^#/, "");
  const at = hash.indexOf("?");
  return new URLSearchParams(at < 0 ? "" : hash.slice(at + 1));
}

/** Replace the hash's parameters without a new history entry or a re-render; empty values are left out. */
export function setHashParams(params) {
  const path = location.hash.replace(/^#/, "").split("?")[0];
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const item of [].concat(value)) if (item !== null && item !== undefined && item !== "") search.append(name, String(item));
  }
  const text = search.toString();
  history.replaceState(null, "", `${location.pathname}${location.search}#${path}${text ? `?${text}` : ""}`);
}

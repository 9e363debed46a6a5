// The hub's public API as the console uses it: the HttpOnly session cookie, the CSRF token on
// writes, and errors turned into sentences.

let csrfToken = null;
export const session = { me: null, permissions: new Set() };

export function setSession(me) {
  session.me = me;
  session.permissions = new Set(me?.permissions ?? []);
  if (me?.csrf_token) csrfToken = me.csrf_token;
  if (!me) csrfToken = null;
}

export function setCsrf(token) {
  csrfToken = token;
}

/** Whether the signed-in user holds a permission (on some site). */
export function can(permission) {
  return session.permissions.has(permission);
}

export class ApiError extends Error {
  constructor(status, body, fallback) {
    super(describe(status, body?.error, fallback));
    this.status = status;
    this.code = body?.error?.code ?? null;
    this.detail = body?.error ?? null;
  }
}

const PERMISSION_WORDS = {
  "auth:manage": "manage users and access",
  "audit:read": "read the audit log",
  "node:read": "see nodes",
  "node:manage": "manage nodes",
  "recording:create": "start recordings",
  "recording:edit": "edit recordings",
  "recording:delete": "delete recordings",
  "recording:playback": "play recordings",
  "recording:download": "download recordings",
  "recording:share": "share recordings by link",
  "listen:monitor": "listen live",
  "listen:manage": "see and end everyone's listen sessions",
  "settings:manage": "change settings",
  "notify:read": "see notifications",
  "notify:manage": "manage notification channels",
  "health:acknowledge": "acknowledge health events",
};

export function permissionWords(permission) {
  return PERMISSION_WORDS[permission] ? `${PERMISSION_WORDS[permission]} (${permission})` : permission;
}

function describe(status, error, fallback) {
  if (status === 0) return "The hub cannot be reached. Check the connection and try again.";
  if (status === 403 && error?.code !== "csrf_failed") {
    const required = [].concat(error?.required ?? []);
    return required.length
      ? `You are not allowed to do this: it needs permission to ${required.map(permissionWords).join(", ")}. Ask an administrator.`
      : "You are not allowed to do this. Ask an administrator.";
  }
  if (status === 403) return "Your session's security token is out of date: reload the page and try again.";
  if (status === 429) {
    const wait = error?.retry_after_s ?? error?.retry_after;
    return `Too many attempts. Try again${wait ? ` in ${Math.ceil(wait)} seconds` : " later"}.`;
  }
  let message = error?.message || fallback || `The hub answered with an error (HTTP ${status}).`;
  if (error?.fields && typeof error.fields === "object") {
    const problems = Object.entries(error.fields).map(([name, problem]) => `${name}: ${typeof problem === "string" ? problem : "invalid"}`);
    if (problems.length) message += ` (${problems.join("; ")})`;
  }
  if (Array.isArray(error?.reasons) && error.reasons.length) message += ` Reasons: ${error.reasons.join(", ")}.`;
  return message;
}

/** A query string from an object; arrays repeat the name; empty values are left out. */
export function query(params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const item of [].concat(value)) {
      if (item === null || item === undefined || item === "") continue;
      search.append(name, String(item));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Call the API; resolves to the parsed body (null for 204), rejects with an ApiError in words. */
export async function api(path, { method = "GET", body, params, contentType = "application/json" } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = contentType;
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(`${path}${query(params)}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, null);
  }
  if (response.status === 204) return null;
  const parsed = await response.json().catch(() => null);
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    if (retry && parsed?.error) parsed.error.retry_after = Number(retry);
    const error = new ApiError(response.status, parsed);
    if (response.status === 401 && session.me) {
      window.dispatchEvent(new CustomEvent("hark:signed-out", { detail: error.message }));
    }
    throw error;
  }
  return parsed;
}

/** Every page of a list (bounded): follows `next_cursor`. */
export async function listAll(path, params = {}, maxPages = 20) {
  const rows = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page++) {
    const body = await api(path, { params: { ...params, limit: 200, cursor } });
    rows.push(...body.data);
    cursor = body.meta?.next_cursor;
    if (!cursor) break;
  }
  return rows;
}

/**
 * An EventSource on the same origin (the session cookie goes with it). `handlers` maps event
 * names to functions of the parsed data. On `reset` the stream is reopened and `onReset` called.
 */
export function follow(path, handlers, { params = {}, onReset = null, onState = null } = {}) {
  let source = null;
  let closed = false;
  const open = () => {
    source = new EventSource(`${path}${query(params)}`, { withCredentials: true });
    source.onopen = () => onState?.("live");
    source.onerror = () => onState?.(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch { return; }
        handler(data, event);
      });
    }
    source.addEventListener("reset", () => {
      source.close();
      onReset?.();
      if (!closed) setTimeout(open, 500);
    });
  };
  open();
  return { close() { closed = true; source?.close(); } };
}

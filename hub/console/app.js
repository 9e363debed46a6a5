// The hark console: sign-in, the section menu and a hash router over the views in js/.
// It uses only the public API, with the HttpOnly session cookie and the CSRF token on writes.
import { api, can, session, setCsrf, setSession } from "./js/api.js";
import { fill, h } from "./js/dom.js";
import { renderFleet } from "./js/fleet.js";
import { renderNode } from "./js/node.js";
import { renderRecording, renderRecordings } from "./js/recordings.js";
import { renderAudit } from "./js/audit.js";
import { renderHealth } from "./js/health.js";
import { renderDiscovered } from "./js/discovered.js";
import { renderKeys, renderMe, renderUsers } from "./js/admin.js";

const $ = (id) => document.getElementById(id);

// Each route: a pattern, the permission it needs (null: any signed-in user), and its view.
const ROUTES = [
  [/^\/fleet$/, "node:read", renderFleet, "Fleet"],
  [/^\/nodes\/([^/]+)$/, "node:read", renderNode, "Node"],
  [/^\/health$/, "health:read", renderHealth, "Health"],
  [/^\/discovered$/, "node:manage", renderDiscovered, "New boxes"],
  [/^\/recordings$/, "recording:read", renderRecordings, "Recordings"],
  [/^\/recordings\/([^/]+)$/, "recording:read", renderRecording, "Recording"],
  [/^\/audit$/, "audit:read", renderAudit, "Audit"],
  [/^\/users$/, "auth:manage", renderUsers, "Users"],
  [/^\/keys$/, null, renderKeys, "API keys"],
  [/^\/me$/, null, renderMe, "Me"],
];

let cleanup = null;

function home() {
  return can("node:read") ? "/fleet" : can("recording:read") ? "/recordings" : "/me";
}

function route() {
  if (!session.me) return;
  const path = location.hash.replace(/^#/, "") || home();
  cleanup?.();
  cleanup = null;
  const view = $("view");
  for (const link of document.querySelectorAll("#nav a")) {
    const current = path.startsWith(link.getAttribute("href").slice(1));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, permission, render, title] of ROUTES) {
    const match = pattern.exec(path.split("?")[0]);
    if (!match) continue;
    document.title = `${title} · hark`;
    if (permission && !can(permission)) {
      fill(view, h("section", { class: "denied" }, h("h2", {}, title),
        h("p", { class: "error", role: "alert" }, `Your roles do not allow this page: it needs the permission ${permission}. Ask an administrator.`)));
      return;
    }
    fill(view);
    cleanup = render(view, ...match.slice(1).map(decodeURIComponent)) ?? null;
    return;
  }
  location.hash = `#${home()}`;
}

function showLogin(message = "") {
  cleanup?.();
  cleanup = null;
  setSession(null);
  fill($("view"));
  $("login-view").hidden = false;
  $("nav").hidden = $("who").hidden = $("logout").hidden = true;
  $("login-error").textContent = message;
  $("username").focus();
}

async function start() {
  let me;
  try {
    me = (await api("/api/v1/auth/me")).data;
  } catch (error) {
    return showLogin(error.status === 401 ? "" : error.message);
  }
  setSession(me);
  $("login-view").hidden = true;
  for (const link of document.querySelectorAll("#nav a")) {
    link.hidden = Boolean(link.dataset.permission) && !can(link.dataset.permission);
  }
  $("nav").hidden = false;
  $("who").textContent = `${me.user.display_name || me.user.username} (${me.user.roles.join(", ") || "no role"})`;
  $("who").hidden = $("logout").hidden = false;
  route();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.submitter;
  button.disabled = true;
  try {
    const { data } = await api("/api/v1/auth/login", {
      method: "POST",
      body: { username: $("username").value, password: $("password").value, cookie: true },
    });
    setCsrf(data.csrf_token);
    $("password").value = "";
    $("login-error").textContent = "";
    await start();
  } catch (error) {
    const message = error.code === "invalid_credentials" ? "The username or password is wrong." : error.message;
    $("login-error").textContent = message;
  } finally {
    button.disabled = false;
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("/api/v1/auth/logout", { method: "POST" }); } catch { /* already gone */ }
  history.replaceState(null, "", location.pathname);
  showLogin("You are logged out.");
});

// The skip link must not change the hash, which is the router's.
document.querySelector(".skip").addEventListener("click", (event) => {
  event.preventDefault();
  $("main").focus();
});
window.addEventListener("hark:signed-out", () => showLogin("Your session has ended: log in again."));
window.addEventListener("hashchange", route);

async function showReadiness() {
  const badge = $("readiness");
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    badge.textContent = body.status === "ready" ? "hub ready" : "hub not ready";
    badge.className = `badge ${body.status === "ready" ? "ready" : "not-ready"}`;
    badge.title = Object.entries(body.checks).filter(([, c]) => !c.ok).map(([n, c]) => `${n}: ${c.reason}`).join("\n");
  } catch {
    badge.textContent = "hub unreachable";
    badge.className = "badge not-ready";
  }
}

async function offerSingleSignOn() {
  try {
    const { data } = await api("/api/v1/auth/oidc/config");
    if (!data.enabled) return;
    const link = $("sso");
    link.href = `${data.login_url}?return_to=/`;
    link.hidden = false;
  } catch { /* no single sign-on */ }
}

// Back from single sign-on: the session cookie is set; drop the token from the address bar.
if (location.hash.startsWith("#token=")) history.replaceState(null, "", location.pathname);
showReadiness();
setInterval(showReadiness, 10000);
offerSingleSignOn();
start();

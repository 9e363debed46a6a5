// The hark console: sign-in, the section menu and a hash router over the views in js/.
// It uses only the public API, with the HttpOnly session cookie and the CSRF token on writes.
import { api, can, session, setCsrf, setSession } from "./js/api.js";
import { fill, h } from "./js/dom.js";
const $ = (id) => document.getElementById(id);

// Each route: a pattern, the permission it needs (null: any signed-in user), its view's module and
// function, and its title. A view's module is loaded when it is first shown (the fleet page does not
// wait for the node page's charting library), and the first one while the session is checked.
const VIEWS = {
  fleet: () => import("./js/fleet.js"),
  node: () => import("./js/node.js"),
  health: () => import("./js/health.js"),
  discovered: () => import("./js/discovered.js"),
  recordings: () => import("./js/recordings.js"),
  audit: () => import("./js/audit.js"),
  admin: () => import("./js/admin.js"),
  sites: () => import("./js/sites.js"),
  plans: () => import("./js/plans.js"),
  watchdog: () => import("./js/watchdog.js"),
  schedules: () => import("./js/schedules.js"),
  providers: () => import("./js/upload_providers.js"),
  policies: () => import("./js/upload_policies.js"),
  uploads: () => import("./js/uploads.js"),
  retention: () => import("./js/retention.js"),
  notify_channels: () => import("./js/notify_channels.js"),
  notifications: () => import("./js/notifications.js"),
  listen_sessions: () => import("./js/listen_sessions.js"),
  hubs: () => import("./js/hubs.js"),
};
const ROUTES = [
  [/^\/fleet$/, "node:read", "fleet", "renderFleet", "Fleet"],
  [/^\/nodes\/([^/]+)$/, "node:read", "node", "renderNode", "Node"],
  [/^\/health$/, "health:read", "health", "renderHealth", "Health"],
  [/^\/discovered$/, "node:manage", "discovered", "renderDiscovered", "New boxes"],
  [/^\/recordings$/, "recording:read_own", "recordings", "renderRecordings", "Recordings"],
  [/^\/recordings\/([^/]+)$/, "recording:read_own", "recordings", "renderRecording", "Recording"],
  [/^\/audit$/, "audit:read", "audit", "renderAudit", "Audit"],
  [/^\/plans$/, "settings:read", "plans", "renderPlans", "Channel-map plans"],
  [/^\/plans\/([^/]+)$/, "settings:read", "plans", "renderPlan", "Channel-map plan"],
  [/^\/watchdog$/, "settings:read", "watchdog", "renderWatchdog", "Watchdog policies"],
  [/^\/watchdog\/([^/]+)$/, "settings:read", "watchdog", "renderWatchdogPolicy", "Watchdog policy"],
  [/^\/sites$/, "site:read", "sites", "renderSites", "Sites"],
  [/^\/schedules$/, "schedule:read", "schedules", "renderSchedules", "Schedules"],
  [/^\/schedules\/new$/, "schedule:manage", "schedules", "renderScheduleNew", "New schedule"],
  [/^\/schedules\/week$/, "schedule:read", "schedules", "renderScheduleWeek", "Upcoming takes"],
  [/^\/schedules\/([^/]+)\/edit$/, "schedule:manage", "schedules", "renderScheduleEdit", "Edit schedule"],
  [/^\/schedules\/([^/]+)$/, "schedule:read", "schedules", "renderSchedule", "Schedule"],
  [/^\/offsite\/providers$/, "settings:read", "providers", "renderProviders", "Upload providers"],
  [/^\/offsite\/providers\/new$/, "settings:manage", "providers", "renderProviderNew", "New upload provider"],
  [/^\/offsite\/providers\/([^/]+)$/, "settings:read", "providers", "renderProvider", "Upload provider"],
  [/^\/offsite\/policies$/, "settings:read", "policies", "renderPolicies", "Upload policies"],
  [/^\/offsite\/policies\/new$/, "settings:manage", "policies", "renderPolicyNew", "New upload policy"],
  [/^\/offsite\/policies\/([^/]+)$/, "settings:read", "policies", "renderPolicy", "Upload policy"],
  [/^\/uploads$/, "recording:read", "uploads", "renderUploads", "Uploads"],
  [/^\/uploads\/([^/]+)$/, "recording:read", "uploads", "renderUpload", "Upload"],
  [/^\/retention$/, "settings:read", "retention", "renderRetention", "Retention"],
  [/^\/retention\/new$/, "settings:manage", "retention", "renderRetentionNew", "New retention policy"],
  [/^\/retention\/([^/]+)$/, "settings:read", "retention", "renderRetentionPolicy", "Retention policy"],
  [/^\/notify\/channels$/, "notify:read", "notify_channels", "renderChannels", "Notification channels"],
  [/^\/notify\/channels\/new$/, "notify:manage", "notify_channels", "renderChannelNew", "New notification channel"],
  [/^\/notify\/channels\/([^/]+)$/, "notify:read", "notify_channels", "renderChannel", "Notification channel"],
  [/^\/notifications$/, "notify:read", "notifications", "renderNotifications", "My notifications"],
  [/^\/notifications\/([^/]+)$/, "notify:read", "notifications", "renderNotification", "Notification"],
  [/^\/listen-sessions$/, "listen:monitor", "listen_sessions", "renderListenSessions", "Listen sessions"],
  [/^\/hubs$/, "metrics:read", "hubs", "renderHubs", "Hubs"],
  [/^\/users$/, "auth:manage", "admin", "renderUsers", "Users"],
  [/^\/keys$/, null, "admin", "renderKeys", "API keys"],
  [/^\/me$/, null, "admin", "renderMe", "Me"],
];

function matchRoute(path) {
  for (const [pattern, permission, module, name, title] of ROUTES) {
    const match = pattern.exec(path.split("?")[0]);
    if (match) return { permission, module, name, title, args: match.slice(1).map(decodeURIComponent) };
  }
  return null;
}

let cleanup = null;
let routing = 0; // the latest route() call: a slower module load for an older one is dropped

function home() {
  return can("node:read") ? "/fleet" : can("recording:read_own") ? "/recordings" : "/me";
}

async function route() {
  if (!session.me) return;
  const path = location.hash.replace(/^#/, "") || home();
  const turn = ++routing;
  cleanup?.();
  cleanup = null;
  const view = $("view");
  for (const link of document.querySelectorAll("#nav a")) {
    const current = path.startsWith(link.getAttribute("href").slice(1));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const found = matchRoute(path);
  if (!found) {
    location.hash = `#${home()}`;
    return;
  }
  document.title = `${found.title} · hark`;
  if (found.permission && !can(found.permission)) {
    fill(view, h("section", { class: "denied" }, h("h2", {}, found.title),
      h("p", { class: "error", role: "alert" }, `Your roles do not allow this page: it needs the permission ${found.permission}. Ask an administrator.`)));
    return;
  }
  fill(view); // the page left goes at once, not when the next one's module is in
  let module;
  try {
    module = await VIEWS[found.module]();
  } catch {
    if (turn === routing) fill(view, h("p", { class: "error", role: "alert" }, "This page could not be loaded: check the connection to the hub and reload."));
    return;
  }
  if (turn !== routing || !session.me) return;
  cleanup = module[found.name](view, ...found.args) ?? null;
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
  // Fetch the first view's module while the session is checked.
  const first = matchRoute(location.hash.replace(/^#/, ""));
  if (first) VIEWS[first.module]().catch(() => {});
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

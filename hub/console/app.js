// The console uses only the public API: /readyz, /api/v1/auth/*, /api/v1/nodes.
// It signs in with the HttpOnly session cookie; writes carry the CSRF token the API hands out.
const $ = (id) => document.getElementById(id);
let csrfToken = null;

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (csrfToken && options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.error?.message || `The hub answered ${response.status}.`);
    error.status = response.status;
    throw error;
  }
  return body;
}

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

function showLogin(message = "") {
  $("login-view").hidden = false;
  $("fleet-view").hidden = true;
  $("who").hidden = $("logout").hidden = true;
  $("login-error").textContent = message;
  $("username").focus();
}

async function showFleet() {
  let me;
  try {
    me = (await api("/api/v1/auth/me")).data;
  } catch (error) {
    return showLogin(error.status === 401 ? "" : error.message);
  }
  csrfToken = me.csrf_token ?? csrfToken;
  $("login-view").hidden = true;
  $("fleet-view").hidden = false;
  $("who").textContent = `${me.user.username} (${me.user.roles.join(", ")})`;
  $("who").hidden = $("logout").hidden = false;
  const rows = $("fleet-rows");
  rows.replaceChildren();
  if (!me.permissions.includes("node:read")) {
    $("fleet-error").textContent = "Your roles do not include seeing nodes.";
    return;
  }
  try {
    const { data } = await api("/api/v1/nodes?limit=200");
    $("fleet-caption").textContent = data.length ? `${data.length} nodes` : "No nodes enrolled yet.";
    for (const node of data) {
      const tr = document.createElement("tr");
      for (const value of [node.name, node.site ?? "—", node.status, node.last_seen_at ?? "never"]) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.append(td);
      }
      rows.append(tr);
    }
  } catch (error) {
    $("fleet-error").textContent = error.message;
  }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const { data } = await api("/api/v1/auth/login", {
      method: "POST",
      body: JSON.stringify({ username: $("username").value, password: $("password").value, cookie: true }),
    });
    csrfToken = data.csrf_token;
    $("password").value = "";
    await showFleet();
  } catch (error) {
    showLogin(error.message);
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("/api/v1/auth/logout", { method: "POST" }); } catch { /* already gone */ }
  csrfToken = null;
  showLogin();
});

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
showFleet();

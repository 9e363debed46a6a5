// The console uses only the public API: /readyz, /api/v1/auth/*, /api/v1/nodes.
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "hark.token";

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
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
    sessionStorage.removeItem(TOKEN_KEY);
    return showLogin(error.status === 401 ? "" : error.message);
  }
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
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    });
    sessionStorage.setItem(TOKEN_KEY, data.token);
    $("password").value = "";
    await showFleet();
  } catch (error) {
    showLogin(error.message);
  }
});

$("logout").addEventListener("click", async () => {
  try { await api("/api/v1/auth/logout", { method: "POST" }); } catch { /* already gone */ }
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
});

showReadiness();
setInterval(showReadiness, 10000);
if (sessionStorage.getItem(TOKEN_KEY)) showFleet(); else showLogin();

// The technician's page: log in, then status every few seconds (ages such as the hub's last contact tick every
// second), live meters (SSE), the test recording and actions.
const API = "/local/v1";
const $ = (id) => document.getElementById(id);

async function call(method, path, body) {
  const response = await fetch(API + path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(data.error?.message || response.statusText), { status: response.status });
  return data.data;
}

// A value in a list: text, or [text, "id"] for ids and URLs (only those may break anywhere), or a node.
function fill(id, rows) {
  const list = $(id);
  list.replaceChildren();
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    if (value instanceof Node) dd.append(value);
    else if (Array.isArray(value)) { dd.textContent = value[0] ?? "—"; if (value[0] != null) dd.className = value[1]; }
    else dd.textContent = value ?? "—";
    list.append(dt, dd);
  }
}

function items(id, entries, build) {
  const list = $(id);
  if (!entries.length) {
    list.replaceChildren(Object.assign(document.createElement("li"), { className: "empty", textContent: "none" }));
    return;
  }
  list.replaceChildren(...entries.map((e) => {
    const li = document.createElement("li");
    li.append(...build(e));
    return li;
  }));
}

// Times say their zone (the browser's); the UTC time is on hover.
function when(iso) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return iso ?? "—";
  return date.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short" });
}

function timeEl(iso) {
  const el = document.createElement("time");
  el.dateTime = iso;
  el.textContent = when(iso);
  const date = new Date(iso);
  if (!Number.isNaN(date.getTime())) el.title = `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
  return el;
}

function ago(iso, now = Date.now()) {
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

/** "last contact 5 s ago (6 Dec 2026, 14:03:07 CET)", its age kept current every second by tick(). */
function since(iso, none) {
  const box = document.createElement("span");
  if (!iso || Number.isNaN(new Date(iso).getTime())) {
    box.textContent = none;
    return box;
  }
  const age = Object.assign(document.createElement("span"), { className: "since" });
  age.dataset.since = iso;
  age.textContent = ago(iso);
  box.append(age, " (", timeEl(iso), ")");
  return box;
}

function tick() {
  for (const el of document.querySelectorAll("[data-since]")) el.textContent = ago(el.dataset.since);
}

const mib = (bytes) => (bytes == null ? null : `${(bytes / 1048576).toFixed(1)} MiB`);
const plural = (n, one, many = `${one}s`) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

// The hub URL box shows the configured hub until the technician starts typing a new one.
let hubUrlEdited = false;
$("hub-url").addEventListener("input", () => { hubUrlEdited = true; });

async function refresh() {
  let status;
  try {
    status = await call("GET", "/status");
  } catch (err) {
    if (err.status === 401) return showLogin();
    $("action-state").textContent = `status: ${err.message}`;
    return;
  }
  const id = status.identity;
  $("title").textContent = `${id.node_id ?? id.hardware_id} · ${id.state} · ${status.session.who}`;
  fill("identity", [["hardware id", [id.hardware_id, "id"]], ["node id", [id.node_id, "id"]], ["state", id.state], ["version", id.version],
    ["audio", [id.audio, "id"]], ["channel map", status.channel_map]]);
  const hub = status.hub;
  const addresses = status.network.filter((a) => a.family === "AF_INET").map((a) => `${a.interface} ${a.address}`);
  fill("connections", [
    ["hub", [hub.url ?? "none set", hub.url ? "id" : ""]],
    ["hub reachable", hub.reachable == null ? "not yet known" : hub.reachable ? "yes" : `no${hub.error ? ` (${hub.error})` : ""}`],
    ["hub last contact", since(hub.last_contact, "none yet")],
    ["broker", [status.broker.url ?? "none", status.broker.url ? "id" : ""]],
    ["broker connected", status.broker.connected ? "yes" : "no"],
    ["outbox", status.outbox ? `${status.outbox.depth} / ${status.outbox.capacity} (${status.outbox.in_flight} in flight)` : null],
    ["addresses", addresses.join(", ") || "none"],
  ]);
  const input = $("hub-url");
  if (!hubUrlEdited && document.activeElement !== input) input.value = hub.url ?? "";
  const sys = status.system;
  fill("system", [
    ["disk free", sys.disk ? `${mib(sys.disk.free_bytes)} (${sys.disk.used_pct}% used)` : null],
    ["cache", `${plural(status.cache.files, "file")}, ${mib(status.cache.bytes)}`],
    ["temperature", sys.temperature_c == null ? null : `${sys.temperature_c} °C`],
    ["cpu", sys.cpu_pct == null ? null : `${sys.cpu_pct}%`],
    ["clock offset", status.clock?.offset_ms == null ? null : `${status.clock.offset_ms} ms`],
    ["time quality", status.clock?.quality],
  ]);
  items("health", (status.health ?? []).slice(-10).reverse(), (h) => [timeEl(h.at), ` ${h.kind} ${h.state} (${h.severity})`]);
  items("actions", (status.actions ?? []).slice(-10).reverse(), (a) => [timeEl(a.at), ` ${a.action} by ${a.who} from ${a.source}: ${a.outcome}`]);
}

let meterSource = null;
let framesSeen = 0;

function startMeters() {
  if (meterSource) return;
  meterSource = new EventSource(`${API}/meters`);
  meterSource.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    framesSeen += 1;
    $("meter-count").textContent = plural(framesSeen, "frame");
    const box = $("meters");
    for (const channel of frame.channels) {
      let row = box.querySelector(`[data-channel="${channel.index}"]`);
      if (!row) {
        row = document.createElement("div");
        row.className = "meter";
        row.dataset.channel = channel.index;
        row.innerHTML = `<span class="name"></span><div class="bar"><div></div></div><span class="value"></span>`;
        box.append(row);
      }
      const peak = channel.peak_dbfs ?? -120;
      row.querySelector(".name").textContent = channel.name ?? `ch ${channel.index + 1}`;
      row.querySelector(".bar > div").style.width = `${Math.max(0, Math.min(100, ((peak + 60) / 60) * 100)).toFixed(1)}%`;
      row.querySelector(".value").textContent = `${peak.toFixed(1)} dB`;
      row.querySelector(".value").className = `value ${channel.clip ? "bad" : ""}`;
      row.dataset.peak = peak.toFixed(2);
    }
  };
}

function showLogin() {
  $("login").hidden = false;
  $("panel").hidden = true;
}

async function showPanel() {
  $("login").hidden = true;
  $("panel").hidden = false;
  await refresh();
  startMeters();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {};
  for (const [field, input] of [["pin", "pin"], ["token", "token"], ["claim_code", "claim-code"]]) {
    if ($(input).value.trim()) body[field] = $(input).value.trim();
  }
  try {
    await call("POST", "/login", body);
    $("login-error").textContent = "";
    await showPanel();
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

async function act(label, work) {
  $("action-state").textContent = `${label}…`;
  try {
    $("action-state").textContent = `${label}: ${await work()}`;
  } catch (err) {
    $("action-state").textContent = `${label} failed: ${err.message}`;
  }
  refresh();
}

$("record").addEventListener("click", async () => {
  $("record").disabled = true;
  $("record-state").textContent = "recording 5 s…";
  try {
    const done = await call("POST", "/test-recording", { duration_s: Number(document.body.dataset.testSeconds || 5) });
    const player = $("player");
    player.src = `${done.url}?t=${Date.now()}`;
    $("record-state").textContent = `recorded ${done.duration_s} s, ${done.channels} channels: playing`;
    player.onended = () => { $("record-state").textContent = "played to the end"; };
    await player.play();
  } catch (err) {
    $("record-state").textContent = `failed: ${err.message}`;
  } finally {
    $("record").disabled = false;
  }
});

$("identify").addEventListener("click", () => act("identify", async () => (await call("POST", "/identify", {})).done));

$("commission").addEventListener("click", () =>
  act("commissioning (10 s)", async () => {
    const report = await call("POST", "/commissioning", { duration_s: Number(document.body.dataset.commissionSeconds || 10) });
    $("commission-report").hidden = false;
    $("commission-report").textContent = JSON.stringify(report, null, 1);
    return report.passed ? "passed" : "needs attention";
  }),
);

$("hub-form").addEventListener("submit", (event) => {
  event.preventDefault();
  act("set hub URL", async () => {
    const url = (await call("PUT", "/hub-url", { hub_url: $("hub-url").value })).hub_url;
    hubUrlEdited = false;
    return url;
  });
});

$("reset").addEventListener("click", () => {
  if (!confirm("Factory reset: forget this node's identity?")) return;
  act("factory reset", async () => (await call("POST", "/reset", {})).state);
});

setInterval(() => { if (!$("panel").hidden) refresh(); }, 3000);
setInterval(tick, 1000);
call("GET", "/status").then(showPanel, showLogin);

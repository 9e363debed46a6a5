// The technician's page: log in, then status every few seconds, live meters (SSE), the test recording and actions.
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

function fill(id, rows) {
  const list = $(id);
  list.replaceChildren();
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value ?? "—";
    list.append(dt, dd);
  }
}

function items(id, entries, text) {
  const list = $(id);
  list.replaceChildren(...entries.map((e) => Object.assign(document.createElement("li"), { textContent: text(e) })));
}

const mib = (bytes) => (bytes == null ? null : `${(bytes / 1048576).toFixed(1)} MiB`);

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
  fill("identity", [["hardware id", id.hardware_id], ["node id", id.node_id], ["state", id.state], ["version", id.version], ["audio", id.audio], ["channel map", status.channel_map]]);
  fill("connections", [
    ["hub", status.hub.url],
    ["hub reachable", status.hub.reachable == null ? "unknown" : status.hub.reachable ? "yes" : `no (${status.hub.error ?? ""})`],
    ["hub last contact", status.hub.last_contact],
    ["broker", status.broker.url],
    ["broker connected", status.broker.connected ? "yes" : "no"],
    ["outbox", status.outbox ? `${status.outbox.depth} / ${status.outbox.capacity} (${status.outbox.in_flight} in flight)` : null],
    ["addresses", status.network.filter((a) => a.family === "AF_INET").map((a) => `${a.interface} ${a.address}`).join(", ")],
  ]);
  const sys = status.system;
  fill("system", [
    ["disk free", sys.disk ? `${mib(sys.disk.free_bytes)} (${sys.disk.used_pct}% used)` : null],
    ["cache", `${status.cache.files} files, ${mib(status.cache.bytes)}`],
    ["temperature", sys.temperature_c == null ? null : `${sys.temperature_c} °C`],
    ["cpu", sys.cpu_pct == null ? null : `${sys.cpu_pct}%`],
    ["clock offset", status.clock?.offset_ms == null ? null : `${status.clock.offset_ms} ms`],
    ["time quality", status.clock?.quality],
  ]);
  items("health", (status.health ?? []).slice(-10).reverse(), (h) => `${h.at} ${h.kind} ${h.state} (${h.severity})`);
  items("actions", status.actions.slice(-10).reverse(), (a) => `${a.at} ${a.action} by ${a.who} from ${a.source}: ${a.outcome}`);
}

let meterSource = null;
let framesSeen = 0;

function startMeters() {
  if (meterSource) return;
  meterSource = new EventSource(`${API}/meters`);
  meterSource.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    framesSeen += 1;
    $("meter-count").textContent = `${framesSeen} frames`;
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
  act("set hub URL", async () => (await call("PUT", "/hub-url", { hub_url: $("hub-url").value })).hub_url);
});

$("reset").addEventListener("click", () => {
  if (!confirm("Factory reset: forget this node's identity?")) return;
  act("factory reset", async () => (await call("POST", "/reset", {})).state);
});

setInterval(() => { if (!$("panel").hidden) refresh(); }, 3000);
call("GET", "/status").then(showPanel, showLogin);

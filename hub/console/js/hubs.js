// "Hubs": the hub processes of the deployment (issue 24) and which one runs each piece of singleton work,
// from GET /api/v1/hub-instances and /hub-instances/leases (metrics:read). On SQLite it is the one hub.
import { api } from "./api.js";
import { ago, fill, h, timeEl } from "./dom.js";

const REFRESH_MS = 3000;
const WORK = {
  sweep: "Heartbeat sweep and job reaper",
  dispatcher: "Schedule dispatcher",
  uploads: "Off-site uploads",
  retention: "Retention",
  notify: "Notification delivery",
  crl: "Certificate revocation list",
  history: "Meter history",
};
const STATE_WORDS = { live: "live", stopped: "stopped", lost: "lost (not heard from)" };

function instancesTable(instances) {
  return h("div", { class: "table-wrap" }, h("table", { class: "hubs-table", "aria-label": "Hub instances" },
    h("thead", {}, h("tr", {}, ["Instance", "Host", "Address", "Version", "State", "Started", "Last seen", "Runs"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, instances.map((i) => h("tr", { dataset: { instanceId: i.id, state: i.state } },
      h("td", {}, h("code", {}, i.id)),
      h("td", {}, `${i.host} (pid ${i.pid})`),
      h("td", {}, i.url),
      h("td", {}, i.version),
      h("td", {}, h("span", { class: `state state-${i.state}` }, STATE_WORDS[i.state] ?? i.state)),
      h("td", {}, timeEl(i.started_at)),
      h("td", {}, i.state === "stopped" ? timeEl(i.stopped_at) : (i.seen_at ? ago(i.seen_at) : "—")),
      h("td", { class: "hub-leases" }, i.leases.length ? i.leases.map((name) => WORK[name] ?? name).join(", ") : "—"))))));
}

function leasesTable(leases, instances) {
  const host = new Map(instances.map((i) => [i.id, i.host]));
  return h("div", { class: "table-wrap" }, h("table", { class: "leases-table", "aria-label": "Singleton work" },
    h("thead", {}, h("tr", {}, ["Work", "Runs on", "Fence", "Held until"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, leases.map((l) => h("tr", { dataset: { lease: l.name, holder: l.held ? l.holder : "" } },
      h("th", { scope: "row" }, WORK[l.name] ?? l.name),
      h("td", {}, l.held ? [h("code", {}, l.holder), host.get(l.holder) ? ` on ${host.get(l.holder)}` : ""] : h("span", { class: "state state-lost" }, "nobody (waiting for a hub to take it)")),
      h("td", {}, String(l.fence)),
      h("td", {}, l.expires_at ? timeEl(l.expires_at) : (l.held ? "while this hub runs" : "—")))))));
}

export function renderHubs(view) {
  let timer = null;
  let stopped = false;
  const error = h("p", { class: "error", role: "alert" });
  const instancesBox = h("div");
  const leasesBox = h("div");

  const load = async () => {
    clearTimeout(timer);
    if (stopped) return;
    try {
      const [instances, leases] = await Promise.all([
        api("/api/v1/hub-instances", { params: { limit: 200 } }),
        api("/api/v1/hub-instances/leases"),
      ]);
      if (stopped) return;
      fill(instancesBox, instancesTable(instances.data));
      fill(leasesBox, leasesTable(leases.data, instances.data));
      error.textContent = "";
    } catch (err) {
      if (!stopped) error.textContent = `Could not load the hubs: ${err.message}`;
    }
    timer = setTimeout(load, REFRESH_MS);
  };

  fill(view, h("article", { class: "hubs" },
    h("h2", {}, "Hubs"), error,
    h("p", { class: "hint" }, "Every hub process of this deployment. Work that must run once (below) runs on one live hub at a time and moves to another within seconds when that hub stops or dies."),
    h("section", { "aria-labelledby": "hubs-instances-h" }, h("h3", { id: "hubs-instances-h" }, "Instances"), instancesBox),
    h("section", { "aria-labelledby": "hubs-leases-h" }, h("h3", { id: "hubs-leases-h" }, "Who runs what"), leasesBox)));
  load();
  return () => { stopped = true; clearTimeout(timer); };
}

// My notifications: what the hub sent (or is sending) about the sites the user may see, newest first, by state, kind
// and severity; and one notification: what it said, the conditions it was about, its channel and every attempt.
import { api } from "./api.js";
import { field, fill, h, hashParams, select, setHashParams, timeEl } from "./dom.js";
import { plural } from "./words.js";
import { latency, outcomeChip, responseCell, severityChip, stateChip } from "./notify_deliveries.js";

const NOTIFICATIONS = "/api/v1/notifications";
const PAGE = 50;
const STATES = ["queued", "sending", "retrying", "delivered", "failed"];
const SEVERITIES = ["critical", "warning", "info"];
// A channel deleted since has no name any more: said so, not linked.
const channelLink = (n) => (n.channel_name
  ? h("a", { href: `#/notify/channels/${encodeURIComponent(n.channel_id)}` }, n.channel_name) : h("span", { class: "hint" }, "a deleted channel"));
const titleOf = (n) => n.title ?? n.message?.title ?? n.kind;

export function renderNotifications(view) {
  const initial = hashParams();
  let gone = false;
  let rows = [];
  let cursor = null;
  let turn = 0;
  const state = select([["", "Any"], ...STATES.map((s) => [s, s])], initial.get("state") ?? "", { name: "state" });
  const severity = select([["", "Any"], ...SEVERITIES.map((s) => [s, s])], initial.get("severity") ?? "", { name: "severity" });
  const kindValue = initial.get("kind") ?? "";
  const kind = select([["", "Any"], ...(kindValue ? [[kindValue, kindValue]] : [])], kindValue, { name: "kind" });
  const channelId = initial.get("channel_id") ?? "";
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) }, "Load more");
  const figures = h("p", { class: "notify-outbox", "aria-live": "polite" });
  // The outbox in figures: what waits, what was delivered or failed today, and how old the oldest waiting one is.
  const loadFigures = async () => {
    try {
      const { data } = await api(`${NOTIFICATIONS}/overview`);
      if (gone) return;
      const waiting = data.queued + data.retrying + data.sending;
      fill(figures, h("strong", {}, waiting ? `${plural(waiting, "notification")} waiting` : "Nothing waiting"),
        data.retrying ? ` (${data.retrying} being retried)` : "",
        data.oldest_queued_at ? [", the oldest since ", timeEl(data.oldest_queued_at)] : "",
        `. In the last 24 h: ${data.delivered_24h} delivered, ${data.failed_24h} failed.`);
    } catch { /* the figures are a convenience */ }
  };
  const params = () => ({ state: state.value, severity: severity.value, kind: kind.value, channel_id: channelId });
  // The kinds there are (with counts) from the facets; the list works without them.
  const loadKinds = async () => {
    try {
      const { data } = await api(`${NOTIFICATIONS}/facets`, { params: { fields: "kind", channel_id: channelId } });
      if (gone) return;
      const current = kind.value;
      fill(kind, h("option", { value: "" }, "Any"), (data.kind ?? []).filter((v) => v.value).map((v) => h("option", { value: v.value }, `${v.value} (${v.count})`)));
      if (current && ![...kind.options].some((o) => o.value === current)) kind.append(h("option", { value: current }, current));
      kind.value = current;
    } catch { /* the kinds are a convenience */ }
  };
  const draw = () => {
    const filtered = Object.values(params()).some(Boolean);
    caption.textContent = rows.length ? `${cursor ? `${rows.length}+ notifications` : plural(rows.length, "notification")}, newest first` : "No notification matches.";
    fill(tbody, rows.length ? rows.map((n) => h("tr", { dataset: { notificationId: n.id, state: n.state } },
      h("td", {}, timeEl(n.created_at)),
      h("td", {}, h("a", { href: `#/notifications/${encodeURIComponent(n.id)}` }, titleOf(n)),
        n.item_count > 1 ? h("span", { class: "hint" }, ` (${n.item_count} conditions)`) : null,
        n.opened === false ? h("span", { class: "hint" }, " resolved") : null),
      h("td", {}, severityChip(n.severity)),
      h("td", {}, stateChip(n.state), n.deferred_reason ? h("div", { class: "hint" }, n.deferred_reason) : null,
        n.state === "failed" && n.last_error ? h("div", { class: "upload-error wrap" }, n.last_error) : null),
      h("td", { class: "col-kind" }, h("code", {}, n.kind)),
      h("td", {}, channelLink(n)),
      h("td", { class: "col-site" }, n.site ?? "the hub")))
      : h("tr", {}, h("td", { colSpan: 7 }, filtered ? "No notification matches these filters." : "Nothing has been sent about your sites yet.")));
  };
  const load = async (append = false) => {
    const mine = ++turn;
    const p = params();
    setHashParams(p);
    try {
      const body = await api(NOTIFICATIONS, { params: { ...p, limit: PAGE, cursor: append ? cursor : null } });
      if (gone || mine !== turn) return;
      rows = append ? rows.concat(body.data) : body.data;
      cursor = body.meta?.next_cursor ?? null;
      more.hidden = !cursor;
      error.textContent = "";
      draw();
    } catch (err) { if (!gone) error.textContent = `Could not load the notifications: ${err.message}`; }
  };
  for (const el of [state, severity, kind]) el.addEventListener("change", () => load());
  fill(view, h("section", { class: "uploads notifications" },
    h("div", { class: "title-row" }, h("h2", {}, "My notifications"),
      h("button", { type: "button", onclick: () => { load(); loadKinds(); loadFigures(); } }, "Refresh"),
      h("a", { class: "button", href: "#/notify/channels" }, "Channels")),
    h("p", { class: "hint" }, "What was sent about the sites you can see.",
      channelId ? [" Showing one channel's only: ", h("a", { href: "#/notifications" }, "show all"), "."] : null),
    figures,
    h("form", { class: "filters", role: "search", "aria-label": "Filter notifications", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("State", state), field("Kind", kind), field("Severity", severity), h("button", { type: "submit" }, "Filter")),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "upload-table notification-table" }, caption,
      h("thead", {}, h("tr", {}, [["Time"], ["What"], ["Severity"], ["State"], ["Kind", "col-kind"], ["Channel"], ["Site", "col-site"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody)),
    more));
  load();
  loadKinds();
  loadFigures();
  return () => { gone = true; };
}

// -- one notification ----------------------------------------------------------------------------------------

const itemLine = (item) => h("li", {}, item.url ? h("a", { href: consoleHref(item.url) }, item.title) : item.title,
  item.node_name && !item.title.includes(item.node_name) ? h("span", { class: "hint" }, ` (${item.node_name})`) : null);

/** A console URL from a message ("https://hub/#/nodes/x") as a link within this console when it points here. */
function consoleHref(url) {
  const at = String(url).indexOf("#/");
  return at >= 0 ? String(url).slice(at) : url;
}

export function renderNotification(view, id) {
  let gone = false;
  (async () => {
    let n;
    try {
      n = (await api(`${NOTIFICATIONS}/${encodeURIComponent(id)}`)).data;
    } catch (err) {
      if (!gone) fill(view, h("section", {}, h("h2", {}, "Notification"), h("p", { class: "error", role: "alert" }, err.status === 404 ? "There is no such notification." : `Could not load the notification: ${err.message}`)));
      return;
    }
    if (gone) return;
    const message = { ...(n.message ?? {}), ...n }; // what it said: flat on the detail (since, url, text, items)
    const items = message.items ?? [];
    const deliveries = n.deliveries ?? [];
    const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "—")];
    fill(view, h("section", { class: "uploads notification" },
      h("div", { class: "title-row" }, h("h2", {}, titleOf(n)), severityChip(n.severity), stateChip(n.state),
        h("a", { class: "button", href: "#/notifications" }, "My notifications")),
      message.text ? h("p", { class: "notification-text wrap" }, message.text) : null,
      items.length ? h("section", { "aria-labelledby": "notification-items" }, h("h3", { id: "notification-items" }, plural(items.length, "condition")),
        h("ul", { class: "notification-items" }, items.map(itemLine))) : null,
      h("dl", { class: "facts" },
        fact("What", [h("code", {}, n.kind), n.opened === false ? " (a resolution)" : ""]),
        fact("Channel", [channelLink(n), n.channel_kind ? ` (${n.channel_kind})` : ""]),
        fact("Site", n.site ?? "the hub"),
        fact("Since", timeEl(message.since)),
        fact("Console page", message.url ? h("a", { href: consoleHref(message.url) }, "open") : "—"),
        fact("Created", timeEl(n.created_at)),
        fact("Attempts", String(n.attempts ?? deliveries.length)),
        fact("Next attempt", n.next_attempt_at ? timeEl(n.next_attempt_at) : "—"),
        n.deferred_reason ? fact("Held", n.deferred_reason) : null,
        fact("Delivered", timeEl(n.delivered_at)),
        n.last_error ? fact("Last error", h("span", { class: "upload-error" }, n.last_error)) : null),
      h("section", { "aria-labelledby": "notification-attempts" }, h("h3", { id: "notification-attempts" }, "Attempts"),
        h("div", { class: "table-wrap" }, h("table", { class: "upload-table notify-delivery-table" },
          h("caption", {}, deliveries.length ? plural(deliveries.length, "attempt") : "No attempt yet."),
          h("thead", {}, h("tr", {}, ["Time", "Attempt", "Outcome", "Latency", "Response"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, deliveries.map((d) => h("tr", { dataset: { deliveryId: d.id, outcome: d.outcome } },
            h("td", {}, timeEl(d.at)), h("td", {}, String(d.attempt ?? "—")), h("td", {}, outcomeChip(d.outcome)),
            h("td", {}, latency(d.latency_ms)), responseCell(d)))))))));
  })();
  return () => { gone = true; };
}

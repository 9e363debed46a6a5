// A notification channel's delivery log: every attempt (tests too), newest first, a page at a time, with what the
// provider answered. Also the outcome and state chips the notification pages share.
import { api } from "./api.js";
import { field, fill, h, select, timeEl } from "./dom.js";
import { plural } from "./words.js";
import { channelUrl } from "./notify_kinds.js";

const PAGE = 25;
const OUTCOME_CLASS = { delivered: "state-succeeded", retry: "state-uploading", failed: "state-failed" };
const STATE_CLASS = { delivered: "state-succeeded", retrying: "state-uploading", sending: "state-running", failed: "state-failed", queued: "" };

export const outcomeChip = (outcome) => h("span", { class: `state ${OUTCOME_CLASS[outcome] ?? ""}` }, outcome ?? "—");
export const stateChip = (state) => h("span", { class: `state ${STATE_CLASS[state] ?? ""}` }, state ?? "—");
export const severityChip = (severity) => h("span", { class: `sev sev-${severity}` }, severity ?? "—");
export const latency = (ms) => (typeof ms === "number" ? `${Math.round(ms).toLocaleString()} ms` : "—");

/** One attempt's answer: the response code and the provider's message. */
export const responseCell = (d) => h("td", { class: "col-response" },
  d.response_code ? h("strong", {}, String(d.response_code)) : null, d.response_code && d.response_message ? " " : null,
  d.response_message ? h("span", { class: `wrap ${d.outcome === "delivered" ? "" : "upload-error"}` }, d.response_message) : d.response_code ? null : "—");

/** What an attempt was for: a test, or a link to its notification. */
const whatCell = (d) => h("td", {}, d.test ? h("span", { class: "state" }, "test")
  : d.notification_id ? h("a", { href: `#/notifications/${encodeURIComponent(d.notification_id)}` }, d.notification_title ?? "notification") : "—",
  d.attempt > 1 ? h("span", { class: "hint" }, ` attempt ${d.attempt}`) : null);

/** The log as a section: {element, reload()}. */
export function deliveryLog(channelId) {
  let rows = [];
  let cursor = null;
  let busy = 0;
  const outcome = select([["", "Any"], ["delivered", "Delivered"], ["retry", "Retry"], ["failed", "Failed"]], "", { name: "outcome" });
  const caption = h("caption", {}, "Loading…");
  const tbody = h("tbody");
  const error = h("p", { class: "error", role: "alert" });
  const more = h("button", { type: "button", hidden: true, onclick: () => load(true) }, "Load more");
  const draw = () => {
    caption.textContent = rows.length ? `${cursor ? `${rows.length}+ deliveries` : plural(rows.length, "delivery", "deliveries")}, newest first` : "No deliveries yet.";
    fill(tbody, rows.length ? rows.map((d) => h("tr", { dataset: { deliveryId: d.id, outcome: d.outcome, test: String(Boolean(d.test)) } },
      h("td", {}, timeEl(d.at)), whatCell(d), h("td", {}, outcomeChip(d.outcome)), h("td", { class: "col-latency" }, latency(d.latency_ms)), responseCell(d)))
      : h("tr", {}, h("td", { colSpan: 5 }, outcome.value ? "No delivery with this outcome." : "Nothing sent yet: send a test, or wait for a notification.")));
  };
  const load = async (append = false) => {
    const turn = ++busy;
    try {
      const body = await api(`${channelUrl(channelId)}/deliveries`, { params: { outcome: outcome.value, limit: PAGE, cursor: append ? cursor : null } });
      if (turn !== busy) return;
      rows = append ? rows.concat(body.data) : body.data;
      cursor = body.meta?.next_cursor ?? null;
      more.hidden = !cursor;
      error.textContent = "";
      draw();
    } catch (err) { if (turn === busy) error.textContent = `Could not load the deliveries: ${err.message}`; }
  };
  outcome.addEventListener("change", () => load());
  const element = h("section", { class: "notify-deliveries", "aria-labelledby": "notify-deliveries-title" },
    h("div", { class: "title-row" }, h("h3", { id: "notify-deliveries-title" }, "Delivery log"),
      h("button", { type: "button", onclick: () => load() }, "Refresh")),
    h("form", { class: "filters", role: "search", "aria-label": "Filter deliveries", onsubmit: (e) => { e.preventDefault(); load(); } }, field("Outcome", outcome)),
    error,
    h("div", { class: "table-wrap" }, h("table", { class: "upload-table notify-delivery-table" }, caption,
      h("thead", {}, h("tr", {}, [["Time"], ["What"], ["Outcome"], ["Latency", "col-latency"], ["Response", "col-response"]]
        .map(([t, cls]) => h("th", { scope: "col", class: cls ?? null }, t)))), tbody)),
    more);
  load();
  return { element, reload: () => load() };
}

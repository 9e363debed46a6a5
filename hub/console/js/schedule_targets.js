// Where a schedule records: chosen nodes (a checkbox each), or every node on a site with all of some tags,
// resolved at each occurrence (so a box added later is included). Says which nodes it matches now.
import { field, fill, h, select } from "./dom.js";
import { plural } from "./words.js";
import { matchedNodes } from "./schedule_rules.js";

const FILTER_FROM = 12;
const listFromText = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

/**
 * `nodes`: what the user may see (null: no node:read, node ids are typed); `sites`: the site rows;
 * `onChange()`: after every change. Answers {element, value(), site(), set(target)}.
 */
export function targetEditor({ nodes, sites, slots, onChange }) {
  const kindName = `target-kind-${Math.random().toString(36).slice(2, 7)}`;
  const radio = (value, label) => {
    const input = h("input", { type: "radio", name: kindName, value, checked: value === "nodes" });
    return [input, h("label", { class: "check" }, input, label)];
  };
  const [byNodes, byNodesLabel] = radio("nodes", "Chosen nodes");
  const [bySelector, bySelectorLabel] = radio("selector", "Every node on a site with some tags");
  const checks = (nodes ?? []).map((n) => h("input", { type: "checkbox", name: "node_ids", value: n.id, dataset: { site: n.site ?? "" } }));
  const labels = (nodes ?? []).map((n, i) => h("label", { class: "check" }, checks[i], n.site ? `${n.name} (${n.site})` : n.name));
  // Many nodes: a search narrows the boxes shown (the chosen ones stay).
  const narrow = nodes && nodes.length > FILTER_FROM ? h("input", { type: "search", name: "node_filter", autocomplete: "off", placeholder: "name or site" }) : null;
  narrow?.addEventListener("input", () => {
    const words = narrow.value.trim().toLowerCase();
    labels.forEach((label, i) => { label.hidden = Boolean(words) && !checks[i].checked && !label.textContent.toLowerCase().includes(words); });
  });
  const nodeList = nodes
    ? h("div", { class: "schedule-nodes" }, narrow ? field("Find nodes", narrow) : null,
      h("fieldset", { class: "schedule-node-list" }, h("legend", {}, "Nodes"), nodes.length ? labels : h("p", { class: "hint" }, "No node is enrolled yet.")))
    : field("Node ids", h("input", { name: "node_ids", autocomplete: "off", spellcheck: "false", placeholder: "nod_…, nod_…" }), "Comma-separated.");
  const typedIds = nodes ? null : nodeList.querySelector("input");
  const site = select([["", "Any site"], ...sites.map((s) => [s.id, s.name && s.name !== s.id ? `${s.name} (${s.id})` : s.id])], "", { name: "selector_site" });
  const tags = h("input", { name: "selector_tags", autocomplete: "off", spellcheck: "false", placeholder: "e.g. roof, mic" });
  const selectorBox = h("div", { class: "schedule-selector" }, field("Site", site), field("Node tags", tags, "Comma-separated; a node needs all of them."));
  const matched = h("p", { class: "hint schedule-matched" });
  const group = h("fieldset", { class: "schedule-targets" }, h("legend", {}, "Record on"),
    h("div", { class: "schedule-radios" }, byNodesLabel, bySelectorLabel), nodeList, selectorBox, matched);
  slots.add("target", group, null);

  const value = () => (bySelector.checked
    ? { selector: { site: site.value || null, tags: listFromText(tags.value) } }
    : { node_ids: nodes ? checks.filter((c) => c.checked).map((c) => c.value) : listFromText(typedIds.value) });

  const siteOf = () => {
    if (bySelector.checked) return site.value || null;
    const chosen = nodes ? checks.filter((c) => c.checked).map((c) => c.dataset.site) : [];
    const distinct = new Set(chosen);
    return distinct.size === 1 && !distinct.has("") ? [...distinct][0] : null;
  };

  const sync = () => {
    nodeList.hidden = bySelector.checked;
    selectorBox.hidden = !bySelector.checked;
    if (!nodes) { matched.textContent = ""; return; }
    const found = matchedNodes(value(), nodes);
    fill(matched, found.length
      ? `Records on ${plural(found.length, "node")} now: ${found.slice(0, 8).map((n) => n.name).join(", ")}${found.length > 8 ? ", …" : ""}.`
      : bySelector.checked ? "No node matches now; nodes that match later are included." : "Choose at least one node.");
  };
  for (const el of [byNodes, bySelector, site, tags, ...checks, typedIds]) {
    if (!el) continue;
    const typing = el.tagName === "INPUT" && !["checkbox", "radio"].includes(el.type);
    el.addEventListener(typing ? "input" : "change", () => { sync(); onChange(); });
  }
  sync();

  return {
    element: group,
    value,
    site: siteOf,
    set(target) {
      if (target?.selector) {
        bySelector.checked = true;
        site.value = target.selector.site ?? "";
        if (site.value !== (target.selector.site ?? "")) { site.append(h("option", { value: target.selector.site }, target.selector.site)); site.value = target.selector.site; }
        tags.value = (target.selector.tags ?? []).join(", ");
      } else {
        byNodes.checked = true;
        const ids = target?.node_ids ?? [];
        if (nodes) for (const c of checks) c.checked = ids.includes(c.value);
        else typedIds.value = ids.join(", ");
      }
      sync();
    },
  };
}

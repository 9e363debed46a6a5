// Wide tables on narrow screens: a table inside a .table-wrap scrolls sideways within it, never the
// page. While it does, a hint above it says so, the wrap is a labelled region described by the hint,
// and it takes the keyboard focus so the arrow keys scroll it. Every .table-wrap any view adds is
// followed; nothing is needed in the views themselves.

const HINT = "Scroll sideways to see more columns";
let ids = 0;
const hints = new WeakMap();

function update(wrap) {
  if (!wrap.isConnected) return;
  const overflows = wrap.scrollWidth > wrap.clientWidth + 1;
  let hint = hints.get(wrap);
  if (!overflows && !hint) return;
  if (!hint) {
    hint = document.createElement("p");
    hint.className = "scroll-hint";
    hint.id = `scroll-hint-${++ids}`;
    hint.textContent = HINT;
    hints.set(wrap, hint);
  }
  if (hint.nextElementSibling !== wrap) wrap.before(hint);
  hint.hidden = !overflows;
  if (overflows) {
    const caption = wrap.querySelector("caption")?.textContent.trim();
    wrap.setAttribute("role", "region");
    wrap.setAttribute("aria-label", caption || "Table");
    wrap.setAttribute("aria-describedby", hint.id);
    wrap.tabIndex = 0;
  } else {
    for (const name of ["role", "aria-label", "aria-describedby", "tabindex"]) wrap.removeAttribute(name);
  }
}

const sizes = new ResizeObserver((entries) => {
  for (const entry of entries) update(entry.target.closest(".table-wrap") ?? entry.target);
});
const seen = new WeakSet();

function follow(wrap) {
  if (seen.has(wrap)) return;
  seen.add(wrap);
  sizes.observe(wrap);
  for (const table of wrap.querySelectorAll(":scope > table")) sizes.observe(table);
}

new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      if (node.matches(".table-wrap")) follow(node);
      for (const wrap of node.querySelectorAll(".table-wrap")) follow(wrap);
      const wrap = node.closest(".table-wrap");
      if (wrap) { follow(wrap); for (const table of wrap.querySelectorAll(":scope > table")) sizes.observe(table); }
    }
  }
}).observe(document.body, { childList: true, subtree: true });
for (const wrap of document.querySelectorAll(".table-wrap")) follow(wrap);

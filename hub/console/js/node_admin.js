// A node's administration on its page (being built): rename, retag, move, delete, technician access.

/** Fill `slot` with the administration of `node`; `reload()` refreshes the page's node. */
export function renderNodeAdmin(slot, node, { reload } = {}) {
  void slot; void node; void reload;
}

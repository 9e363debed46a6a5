// Boxes seen on the network but not enrolled yet (being built).
import { fill, h } from "./dom.js";

export function renderDiscovered(view) {
  fill(view, h("h2", {}, "New boxes"));
}

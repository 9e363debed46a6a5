// The fleet-wide health inbox (being built).
import { fill, h } from "./dom.js";

export function renderHealth(view) {
  fill(view, h("h2", {}, "Health"));
}

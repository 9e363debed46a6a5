// A form's problems shown at their fields: the hub's 400 names each field (`fields`), and each field the form
// registers shows its own problems below it (aria-invalid, aria-describedby); a name with no field of its own
// ("config.region" on a form with only "config") falls back to its parent's field, prefixed with the name.
import { h } from "./dom.js";

export function fieldProblems() {
  const slots = new Map();
  return {
    /** Register `fieldEl` (from dom.js field()) as where `name`'s problems show; returns it. */
    add(name, fieldEl) {
      const message = h("small", { class: "field-problem", id: `problem-${name.replace(/\W/g, "-")}`, hidden: true });
      fieldEl.append(message);
      slots.set(name, { control: fieldEl.querySelector("input, select, textarea"), message });
      return fieldEl;
    },
    /** Show each problem at its field and clear the others; returns "name: problem" for those no field shows. */
    mark(fields = {}) {
      for (const { control, message } of slots.values()) {
        message.hidden = true;
        message.textContent = "";
        control?.removeAttribute("aria-invalid");
      }
      const left = [];
      for (const [name, problem] of Object.entries(fields)) {
        const key = slots.has(name) ? name : name.split(".")[0];
        const slot = slots.get(key);
        if (!slot) { left.push(`${name}: ${problem}`); continue; }
        const text = key === name ? String(problem) : `${name}: ${problem}`;
        slot.message.textContent = slot.message.textContent ? `${slot.message.textContent}; ${text}` : text;
        slot.message.hidden = false;
        slot.control?.setAttribute("aria-invalid", "true");
        slot.control?.setAttribute("aria-describedby", slot.message.id);
      }
      return left;
    },
  };
}

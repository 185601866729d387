// Building the page: elements from data, text always as text (never parsed as HTML), and small formatters.

/**
 * h("button", {class: "primary", onclick: fn, disabled: true}, "Save") -> <button>.
 * Children: strings and numbers become text nodes; null, undefined and false are skipped; arrays are flattened.
 * Attributes starting with "on" become event listeners; `true` sets a boolean attribute; null/false/undefined skip it.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value" && "value" in el) {
      el.value = value;
    } else if (name === "checked" && "checked" in el) {
      el.checked = Boolean(value);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace the children of `el` with `children`. */
export function fill(el, ...children) {
  return append(clear(el), children);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

/** A timestamp from the API (UTC, ISO 8601) in the viewer's time zone. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : dateTime.format(d);
}

export function clock(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : timeOnly.format(d);
}

/** "3 min ago", for last-activity columns. */
export function ago(iso) {
  if (!iso) return "—";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return "just now";
  const units = [["day", 86400], ["h", 3600], ["min", 60]];
  for (const [unit, size] of units) {
    if (seconds >= size) {
      const n = Math.floor(seconds / size);
      return unit === "day" ? `${n} day${n > 1 ? "s" : ""} ago` : `${n} ${unit} ago`;
    }
  }
  return when(iso);
}

export function usd(value) {
  const n = Number(value || 0);
  if (n === 0) return "$0";
  return n < 0.01 ? `$${n.toFixed(4)}` : `$${n.toFixed(2)}`;
}

export function count(value) {
  const n = Number(value || 0);
  if (n >= 1_000_000) return `${(n / 1_000_000).toFixed(1)}M`;
  if (n >= 10_000) return `${Math.round(n / 1000)}k`;
  return n.toLocaleString();
}

export function bytes(value) {
  const n = Number(value || 0);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A status as a coloured badge (the colour comes from the CSS class). */
export function badge(status) {
  return h("span", { class: `badge status-${String(status).replace(/[^a-z_]/g, "")}` }, status);
}

/** A long text folded after `lines` lines, with a button to show all of it. */
export function folded(text, lines = 12) {
  const value = String(text ?? "");
  const pre = h("pre", { class: "folded" }, value);
  if (value.split("\n").length <= lines && value.length <= lines * 120) return pre;
  pre.classList.add("is-folded");
  const toggle = h("button", { class: "link", type: "button" }, "Show all");
  toggle.addEventListener("click", () => {
    const open = pre.classList.toggle("is-folded");
    toggle.textContent = open ? "Show all" : "Show less";
  });
  return h("div", { class: "fold" }, pre, toggle);
}

/** A form's named fields as an object; empty strings left out. */
export function formValues(form) {
  const values = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.type === "checkbox") values[el.name] = el.checked;
    else if (el.type === "file") continue;
    else if (el.value !== "") values[el.name] = el.value;
  }
  return values;
}

/** A labelled form field. */
export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, hint ? h("small", {}, hint) : null);
}

export function select(name, options, value) {
  return h(
    "select",
    { name },
    options.map(([optionValue, text]) => h("option", { value: optionValue, selected: optionValue === value }, text)),
  );
}

/** The last second of a local calendar day ("2025-03-01" from a date input) as an ISO instant. */
export function endOfLocalDay(value) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d, 23, 59, 59).toISOString();
}

/** A local calendar date as yyyy-mm-dd, for a date input's min. */
export function localDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

// Pieces every screen uses: error messages, pagers, busy buttons, notices.
import { fill, h } from "./dom.js";

/** An error as the message the API gave (never a blank screen). */
export function errorBox(error) {
  const message = error && error.message ? error.message : String(error);
  return h("div", { class: "error", role: "alert" }, message);
}

/** Show `error` in `slot` (an element kept for messages), or clear it with null. */
export function showError(slot, error) {
  fill(slot, error ? errorBox(error) : null);
}

export function notice(text) {
  return h("div", { class: "notice", role: "status" }, text);
}

/** Run `action` while `button` shows it is busy; errors go to `slot`. Returns the action's result, or undefined. */
export async function busy(button, slot, action) {
  button.disabled = true;
  button.classList.add("is-busy");
  if (slot) showError(slot, null);
  try {
    return await action();
  } catch (error) {
    if (slot) showError(slot, error);
    else throw error;
  } finally {
    button.disabled = false;
    button.classList.remove("is-busy");
  }
}

/** "Page 2 of 7" with previous/next buttons, for the API's page envelope. */
export function pager(page, onPage) {
  if (!page || page.total_pages <= 1) return h("div", { class: "pager" }, page ? `${page.total} in all` : null);
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", disabled: page.page <= 1, onclick: () => onPage(page.page - 1) }, "‹ Previous"),
    h("span", {}, `Page ${page.page} of ${page.total_pages} · ${page.total} in all`),
    h("button", { type: "button", disabled: page.page >= page.total_pages, onclick: () => onPage(page.page + 1) }, "Next ›"),
  );
}

/** A secret shown once, with a copy button. */
export function secretBox(label, secret) {
  const copy = h("button", { type: "button", class: "small" }, "Copy");
  copy.addEventListener("click", async () => {
    await navigator.clipboard.writeText(secret).catch(() => {});
    copy.textContent = "Copied";
  });
  return h(
    "div",
    { class: "secret", role: "status" },
    h("p", {}, `${label} — shown only this once; copy it now.`),
    h("code", { class: "secret-value" }, secret),
    copy,
  );
}

/** A page header: the title and, on the right, actions. */
export function header(title, ...actions) {
  return h("header", { class: "page-header" }, h("h1", {}, title), h("div", { class: "actions" }, actions));
}

/** A table from rows: columns are [heading, row => cell]. */
export function table(columns, rows, { empty = "Nothing here yet.", rowClass } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", { scope: "col" }, heading)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h("tr", { class: rowClass ? rowClass(row) : null }, columns.map(([heading, cell]) => h("td", { "data-label": heading }, cell(row)))),
        ),
      ),
    ),
  );
}

/**
 * A button that asks before it acts: a click shows "question [Yes, <label>] [Cancel]" in its place (Escape or
 * Cancel go back), so a slip of the mouse or keyboard changes nothing; for a `danger`ous action the focus goes to
 * Cancel. `action` runs with the confirming button busy; its error goes to `slot`.
 */
export function confirmButton(label, question, action, { slot, danger = true, small = true } = {}) {
  const wrap = h("span", { class: "confirm-inline" });
  const classes = [danger ? "danger" : "", small ? "small" : ""].filter(Boolean).join(" ") || null;
  const button = h("button", { type: "button", class: classes }, label);
  const restore = () => {
    fill(wrap, button);
    button.focus();
  };
  button.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: classes }, `Yes, ${label.toLowerCase()}`);
    const no = h("button", { type: "button", class: small ? "small" : null }, "Cancel");
    no.addEventListener("click", restore);
    yes.addEventListener("click", async () => {
      let ok = false;
      await busy(yes, slot, async () => {
        await action();
        ok = true;
      });
      if (!ok && wrap.isConnected) restore();
    });
    fill(wrap, h("span", { class: "confirm-question" }, question), yes, no);
    (danger ? no : yes).focus();
  });
  wrap.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !wrap.contains(button)) {
      event.stopPropagation();
      restore();
    }
  });
  return fill(wrap, button);
}

/** The permission modes a session, template or task may take, as the forms offer them. */
export const MODES = [
  ["default", "Ask before acting (default)"],
  ["acceptEdits", "Accept file edits"],
  ["plan", "Plan only"],
  ["bypassPermissions", "Never ask (bypass)"],
];
export const MODE_NAMES = Object.fromEntries(MODES.map(([value, text]) => [value, text.replace(" (default)", "")]));

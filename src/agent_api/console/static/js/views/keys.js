// The caller's API keys: the list (name, prefix, created, expires, last used, state), creating one (its secret
// shown once) and revoking one after a confirmation.
import { api } from "../api.js";
import { ago, badge, field, fill, h, when } from "../dom.js";
import { busy, header, notice, pager, secretBox, showError, table } from "../ui.js";

/**
 * A button that asks before it acts: a click shows "question [Yes, <label>] [Cancel]" in its place (Escape or
 * Cancel go back). `action` runs with the confirming button busy; its error goes to `slot`. Shared by the
 * account views (keys, webhooks, admin).
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
    yes.focus();
  });
  wrap.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !wrap.contains(button)) {
      event.stopPropagation();
      restore();
    }
  });
  return fill(wrap, button);
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

function stateOf(key) {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && new Date(key.expires_at).getTime() <= Date.now()) return "expired";
  return "active";
}

export async function render(main) {
  const state = { page: 1 };
  const slot = h("div", { class: "messages" });
  const created = h("div", { class: "created-secret" });
  const creator = h("div", { class: "creator" });
  const list = h("div", { class: "list" });

  const newButton = h("button", { type: "button", class: "primary", "aria-expanded": "false" }, "New API key");
  newButton.addEventListener("click", () => toggleCreator());

  fill(
    main,
    header("API keys", newButton),
    h(
      "p",
      { class: "muted intro" },
      "An API key works like a sign-in for scripts: send it as ",
      h("code", {}, "Authorization: Bearer <key>"),
      ". It acts as you until it expires or you revoke it.",
    ),
    created,
    creator,
    slot,
    list,
  );

  function toggleCreator() {
    if (creator.firstChild) {
      fill(creator);
      newButton.setAttribute("aria-expanded", "false");
      newButton.focus();
      return;
    }
    newButton.setAttribute("aria-expanded", "true");
    const formSlot = h("div", { class: "messages" });
    const name = h("input", { name: "name", required: true, maxlength: 100, placeholder: "What will use it? (e.g. CI deploys)" });
    const expires = h("input", { type: "date", name: "expires", min: localDate(new Date()) });
    const submit = h("button", { type: "submit", class: "primary" }, "Create key");
    const form = h(
      "form",
      { class: "card form-grid", "aria-label": "New API key" },
      h("h2", {}, "New API key"),
      formSlot,
      field("Name", name),
      field("Expires", expires, "Optional. The key stops working at the end of this day (your time); empty: never."),
      h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: () => toggleCreator() }, "Cancel")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = { name: name.value.trim() };
      if (expires.value) body.expires_at = endOfLocalDay(expires.value);
      busy(submit, formSlot, async () => {
        const key = await api("POST", "/auth/api-keys", body);
        fill(creator);
        newButton.setAttribute("aria-expanded", "false");
        fill(created, secretBox(`API key “${key.name}”`, key.key));
        state.page = 1;
        await load();
        created.querySelector("button")?.focus();
      });
    });
    fill(creator, form);
    name.focus();
  }

  async function revoke(key) {
    await api("DELETE", `/auth/api-keys/${key.id}`);
    fill(created, notice(`Revoked “${key.name}”. It no longer works.`));
    await load();
  }

  async function load() {
    try {
      const page = await api("GET", `/auth/api-keys?page=${state.page}&page_size=50`);
      fill(
        list,
        table(
          [
            ["Name", (k) => h("strong", {}, k.name)],
            ["Prefix", (k) => h("code", {}, `${k.prefix}…`)],
            ["Created", (k) => when(k.created_at)],
            ["Expires", (k) => (k.expires_at ? when(k.expires_at) : "Never")],
            ["Last used", (k) => h("span", { title: k.last_used_at ? when(k.last_used_at) : null }, k.last_used_at ? ago(k.last_used_at) : "Never")],
            ["State", (k) => badge(stateOf(k))],
            [
              "Actions",
              (k) =>
                k.revoked_at
                  ? h("span", { class: "muted" }, `Revoked ${when(k.revoked_at)}`)
                  : confirmButton("Revoke", `Revoke “${k.name}”?`, () => revoke(k), { slot }),
            ],
          ],
          page.items,
          { empty: "No API keys yet. Create one with New API key.", rowClass: (k) => (stateOf(k) === "active" ? null : "is-inactive") },
        ),
        page.total > 0 && pager(page, (n) => {
          state.page = n;
          load();
        }),
      );
      showError(slot, null);
    } catch (error) {
      showError(slot, error);
    }
  }
  await load();
}

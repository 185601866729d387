// The caller's API keys: the list (name, prefix, created, expires, last used, state), creating one (its secret
// shown once) and revoking one after a confirmation.
import { api } from "../api.js";
import { ago, badge, endOfLocalDay, field, fill, h, localDate, when } from "../dom.js";
import { busy, confirmButton, header, notice, pager, secretBox, showError, table } from "../ui.js";

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

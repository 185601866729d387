// Session templates: browse (mine, public, all I can use; by category; paged), full-text search, create, share
// (public and with named users), delete my own, and start a session from one.
import { api, query } from "../api.js";
import { field, fill, h, select, when } from "../dom.js";
import { MODES, MODE_NAMES, busy, confirmButton, header, notice, pager, showError } from "../ui.js";

const CATEGORIES = ["development", "security", "production", "debugging", "performance", "custom"];
const SCOPES = [["accessible", "All I can use"], ["my", "Mine"], ["public", "Public"]];
const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);

export async function render(main) {
  const state = { page: 1, scope: "accessible", category: "", search: "" };
  const list = h("div", { class: "lib-list" });
  const slot = h("div", { class: "messages" });
  const panel = h("div", { class: "creator" });

  const searchBox = h("input", { type: "search", name: "search", placeholder: "Search name, tags, description", "aria-label": "Search templates" });
  const scopeBox = select("scope", SCOPES, state.scope);
  scopeBox.setAttribute("aria-label", "Whose templates");
  const categoryBox = select("category", [["", "Any category"], ...CATEGORIES.map((c) => [c, capital(c)])], "");
  categoryBox.setAttribute("aria-label", "Category");
  let timer = null;
  searchBox.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.search = searchBox.value.trim();
      state.page = 1;
      load();
    }, 250);
  });
  scopeBox.addEventListener("change", () => {
    state.scope = scopeBox.value;
    state.page = 1;
    load();
  });
  categoryBox.addEventListener("change", () => {
    state.category = categoryBox.value;
    state.page = 1;
    load();
  });

  const newButton = h("button", { type: "button", class: "primary" }, "New template");
  newButton.addEventListener("click", () => (panel.dataset.open === "new" ? closePanel() : openCreator()));

  fill(main, header("Session templates", newButton), panel, h("div", { class: "filters" }, searchBox, scopeBox, categoryBox), slot, list);

  function closePanel() {
    delete panel.dataset.open;
    fill(panel);
  }

  async function load() {
    try {
      const size = 12;
      const page = state.search
        ? await api("POST", "/session-templates/search", {
            search_term: state.search,
            scope: state.scope,
            category: state.category || null,
            page: state.page,
            page_size: size,
          })
        : await api("GET", `/session-templates${query({ scope: state.scope, category: state.category, page: state.page, page_size: size })}`);
      const filtered = state.search || state.category || state.scope !== "accessible";
      fill(
        list,
        page.items.length
          ? h("div", { class: "lib-grid" }, page.items.map(card))
          : h("p", { class: "empty" }, filtered ? "No template matches." : "No templates yet. Make one with New template."),
        pager(page, (n) => {
          state.page = n;
          load();
        }),
      );
      if (slot.querySelector(".error")) showError(slot, null);
    } catch (error) {
      showError(slot, error);
    }
  }

  function card(t) {
    const cardSlot = h("div", { class: "messages" });
    const start = h("button", { type: "button", class: "primary small" }, "Start a session");
    start.addEventListener("click", () =>
      busy(start, cardSlot, async () => {
        const created = await api("POST", "/sessions", { template_id: t.id });
        location.hash = `#/sessions/${created.id}`;
      }),
    );
    const actions = [start];
    if (t.is_owner) {
      const share = h("button", { type: "button", class: "small" }, "Share");
      share.addEventListener("click", () => openSharing(t));
      actions.push(
        share,
        confirmButton("Delete", "Delete it?", async () => {
          await api("DELETE", `/session-templates/${t.id}`);
          fill(slot, notice(`Template “${t.name}” deleted.`));
          await load();
        }, { slot: cardSlot }),
      );
    }
    const shared = (t.shared_with_user_ids || []).length;
    const reach = t.is_public ? "Public" : shared ? `Shared with ${shared} user${shared > 1 ? "s" : ""}` : t.is_owner ? "Private" : "Shared with you";
    return h(
      "article",
      { class: "card lib-card", "aria-label": t.name },
      h("div", { class: "lib-card-head" }, h("h2", {}, t.name), h("span", { class: `lib-chip lib-cat-${t.category}` }, capital(t.category))),
      t.description ? h("p", { class: "lib-desc" }, t.description) : null,
      t.tags.length ? h("p", { class: "lib-tags" }, t.tags.map((tag) => h("span", { class: "lib-chip" }, `#${tag}`))) : null,
      h(
        "p",
        { class: "lib-meta" },
        h("span", {}, MODE_NAMES[t.permission_mode] || t.permission_mode),
        h("span", {}, reach),
        h("span", {}, t.usage_count === 1 ? "used once" : `used ${t.usage_count} times`),
        t.is_owner ? h("span", {}, "yours") : null,
        t.initial_message ? h("span", { title: t.initial_message }, "sends a first message") : null,
      ),
      cardSlot,
      h("div", { class: "actions lib-card-actions" }, actions),
    );
  }

  function openCreator() {
    panel.dataset.open = "new";
    const formSlot = h("div", { class: "messages" });
    const submit = h("button", { type: "submit", class: "primary" }, "Create");
    const form = h(
      "form",
      { class: "card form-grid", "aria-label": "New template" },
      h("h2", {}, "New template"),
      formSlot,
      field("Name", h("input", { name: "name", required: true, maxlength: 200 })),
      field("Description", h("textarea", { name: "description", rows: 2, maxlength: 5000 })),
      field("Category", select("category", CATEGORIES.map((c) => [c, capital(c)]), "custom")),
      field("Tags", h("input", { name: "tags", placeholder: "python, review" }), "Separated by commas."),
      field("Permission mode", select("permission_mode", MODES, "default")),
      field("System prompt", h("textarea", { name: "system_prompt", rows: 3 })),
      field("Initial message", h("textarea", { name: "initial_message", rows: 2 }), "Sent as the first prompt of every session made from it."),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "is_public" }), " Public: every user can use it"),
      h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: closePanel }, "Cancel")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const body = {
        name: String(data.get("name") || "").trim(),
        category: String(data.get("category")),
        permission_mode: String(data.get("permission_mode")),
        tags: String(data.get("tags") || "").split(",").map((t) => t.trim()).filter(Boolean),
        is_public: data.get("is_public") !== null,
      };
      for (const key of ["description", "system_prompt", "initial_message"]) {
        const value = String(data.get(key) || "").trim();
        if (value) body[key] = value;
      }
      busy(submit, formSlot, async () => {
        const created = await api("POST", "/session-templates", body);
        closePanel();
        fill(slot, notice(`Template “${created.name}” created.`));
        await load();
      });
    });
    fill(panel, form);
    form.querySelector("input").focus();
  }

  function openSharing(t) {
    panel.dataset.open = `share-${t.id}`;
    const formSlot = h("div", { class: "messages" });
    const isPublic = h("input", { type: "checkbox", name: "is_public", checked: t.is_public });
    const users = h("textarea", { name: "users", rows: 3, placeholder: "One user id per line", spellcheck: "false" }, (t.shared_with_user_ids || []).join("\n"));
    const submit = h("button", { type: "submit", class: "primary" }, "Save sharing");
    const form = h(
      "form",
      { class: "card form-grid", "aria-label": `Share ${t.name}` },
      h("h2", {}, `Share “${t.name}”`),
      formSlot,
      h("label", { class: "check" }, isPublic, " Public: every user can see and use it"),
      field("Shared with (user ids)", users, "They see it under All I can use; only you can change or delete it."),
      h("p", { class: "muted" }, `Last changed ${when(t.updated_at)}.`),
      h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: closePanel }, "Cancel")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const ids = users.value.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
      busy(submit, formSlot, async () => {
        const saved = await api("PATCH", `/session-templates/${t.id}/sharing`, { is_public: isPublic.checked, shared_with_user_ids: ids });
        closePanel();
        const count = saved.shared_with_user_ids.length;
        fill(slot, notice(`“${saved.name}” is now ${saved.is_public ? "public" : "not public"}${count ? ` and shared with ${count} user${count > 1 ? "s" : ""}` : ""}.`));
        await load();
      });
    });
    fill(panel, form);
    panel.scrollIntoView({ block: "nearest" });
    isPublic.focus();
  }

  await load();
  return () => clearTimeout(timer);
}

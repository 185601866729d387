// The caller's sessions: status, last activity, tokens and cost; search, status filter, paging; and creating one,
// blank or from a template.
import { api, query } from "../api.js";
import { ago, badge, count, field, fill, h, select, usd } from "../dom.js";
import { MODES, busy, errorBox, header, pager, showError, table } from "../ui.js";

const STATUSES = ["", "created", "connecting", "active", "processing", "waiting", "paused", "completed", "failed", "archived"];

export async function render(main) {
  const state = { page: 1, search: "", status: "" };
  const list = h("div", { class: "list" });
  const slot = h("div", { class: "messages" });
  const creator = h("div", { class: "creator" });

  const searchBox = h("input", { type: "search", name: "search", placeholder: "Search by name", "aria-label": "Search sessions" });
  const statusBox = select("status", STATUSES.map((s) => [s, s || "Any status"]), "");
  statusBox.setAttribute("aria-label", "Status");
  let timer = null;
  searchBox.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.search = searchBox.value.trim(); state.page = 1; load(); }, 250);
  });
  statusBox.addEventListener("change", () => { state.status = statusBox.value; state.page = 1; load(); });

  const newButton = h("button", { type: "button", class: "primary" }, "New session");
  newButton.addEventListener("click", () => openCreator(creator));

  fill(main, header("Sessions", newButton), creator, h("div", { class: "filters" }, searchBox, statusBox), slot, list);

  async function load() {
    try {
      const page = await api("GET", `/sessions${query({ page: state.page, page_size: 20, search: state.search, status: state.status })}`);
      fill(
        list,
        table(
          [
            ["Name", (s) => h("a", { href: `#/sessions/${s.id}` }, s.name || "Untitled session")],
            ["Status", (s) => badge(s.status)],
            ["Last activity", (s) => h("span", { title: s.updated_at }, ago(s.updated_at))],
            ["Turns", (s) => String(s.turn_count)],
            ["Tokens", (s) => `${count(s.total_input_tokens)} in · ${count(s.total_output_tokens)} out`],
            ["Cost", (s) => usd(s.total_cost_usd)],
          ],
          page.items,
          { empty: state.search || state.status ? "No session matches." : "No sessions yet. Start one with New session." },
        ),
        pager(page, (n) => { state.page = n; load(); }),
      );
      showError(slot, null);
    } catch (error) {
      showError(slot, error);
    }
  }
  await load();
}

async function openCreator(creator) {
  if (creator.firstChild) {
    fill(creator);
    return;
  }
  const slot = h("div", { class: "messages" });
  let templates = [];
  let servers = [];
  try {
    [templates, servers] = await Promise.all([
      api("GET", "/session-templates?page_size=100").then((p) => p.items),
      api("GET", "/mcp-servers?page_size=100").then((p) => p.items),
    ]);
  } catch (error) {
    fill(creator, errorBox(error));
    return;
  }
  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form",
    { class: "card form-grid", "aria-label": "New session" },
    h("h2", {}, "New session"),
    slot,
    field("Name", h("input", { name: "name", maxlength: 200, placeholder: "What is it for?" })),
    field("Template", select("template_id", [["", "Blank session"], ...templates.map((t) => [t.id, t.name])], "")),
    field("Permission mode", select("permission_mode", [["", "From the template, or ask before acting"], ...MODES], "")),
    field("Model", h("input", { name: "model", placeholder: "The server's default" })),
    field("System prompt", h("textarea", { name: "system_prompt", rows: 3 })),
    servers.length
      ? h("fieldset", { class: "field" }, h("legend", {}, "MCP servers"),
          servers.map((s) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "mcp", value: s.id }), ` ${s.name}`)))
      : null,
    h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: () => fill(creator) }, "Cancel")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {};
    for (const key of ["name", "template_id", "permission_mode", "system_prompt"]) {
      const value = String(data.get(key) || "").trim();
      if (value) body[key] = value;
    }
    const model = String(data.get("model") || "").trim();
    if (model) body.sdk_options = { model };
    const mcp = data.getAll("mcp").map(String);
    if (mcp.length) body.mcp_server_ids = mcp;
    busy(submit, slot, async () => {
      const created = await api("POST", "/sessions", body);
      location.hash = `#/sessions/${created.id}`;
    });
  });
  fill(creator, form);
  form.querySelector("input").focus();
}

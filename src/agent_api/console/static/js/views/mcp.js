// MCP servers: the list with health and tools; add one (remote http/sse, a command for admins, or from the
// catalogue); enable/disable, delete; a health check with its result; import a Claude Desktop config file with the
// outcome of each entry; export as a JSON file.
import { api, call, user } from "../api.js";
import { ago, badge, field, fill, h, select, when } from "../dom.js";
import { busy, confirmButton, header, notice, pager, showError, table } from "../ui.js";

const TYPES = { http: "HTTP", sse: "SSE", stdio: "Command (stdio)" };

/** "Name: value" or "NAME=value" lines as an object; blank lines skipped. */
function pairs(text, separator) {
  const out = {};
  for (const line of String(text || "").split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf(separator);
    if (at < 1) throw new Error(`“${line.trim()}” is not of the form name${separator === ":" ? ": " : "="}value`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

/** Save JSON as a file through a Blob URL (the console's policy governs fetches and frames, not downloads). */
function saveJson(data, filename) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2) + "\n"], { type: "application/json" }));
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function toolList(tools) {
  if (!tools || !tools.length) return h("p", { class: "muted" }, "No tools.");
  return h(
    "ul",
    { class: "lib-tools" },
    tools.map((t) => h("li", {}, h("code", {}, t.name), t.description ? h("span", { class: "muted" }, ` — ${t.description}`) : null)),
  );
}

export async function render(main) {
  const me = user();
  const admin = me.role === "admin";
  const state = { page: 1 };
  const panel = h("div", { class: "creator" });
  const result = h("div", { class: "lib-result", "aria-live": "polite" });
  const slot = h("div", { class: "messages" });
  const list = h("div", { class: "list" });

  let catalogue = null;
  const addButton = h("button", { type: "button", class: "primary" }, "Add server");
  addButton.addEventListener("click", () => (panel.dataset.open === "add" ? closePanel() : openAdd()));
  const importButton = h("button", { type: "button" }, "Import");
  importButton.addEventListener("click", () => (panel.dataset.open === "import" ? closePanel() : openImport()));
  const exportButton = h("button", { type: "button" }, "Export");
  exportButton.addEventListener("click", () =>
    busy(exportButton, slot, async () => {
      const data = await api("GET", "/mcp-servers/export");
      saveJson(data, "mcp-servers.json");
      const n = Object.keys(data.mcpServers || {}).length;
      fill(slot, notice(`Exported ${n} server${n === 1 ? "" : "s"} to mcp-servers.json (secrets shown as ***).`));
    }),
  );

  fill(main, header("MCP servers", addButton, importButton, exportButton), panel, result, slot, list);

  function closePanel() {
    delete panel.dataset.open;
    fill(panel);
  }

  const mayChange = (s) => admin || (s.user_id === me.id && !s.is_global);

  async function load() {
    try {
      const page = await api("GET", `/mcp-servers?page=${state.page}&page_size=20`);
      fill(
        list,
        table(
          [
            ["Name", (s) => h("div", {}, h("strong", {}, s.name), s.is_global ? h("span", { class: "lib-chip" }, "global") : null, s.description ? h("div", { class: "muted lib-small" }, s.description) : null)],
            ["Type", (s) => TYPES[s.server_type] || s.server_type],
            ["Enabled", (s) => h("span", { class: `badge ${s.is_enabled ? "status-active" : ""}` }, s.is_enabled ? "on" : "off")],
            ["Health", (s) => h("span", { title: s.last_health_check_at ? `checked ${when(s.last_health_check_at)}` : "never checked" }, badge(s.health_status), s.last_health_check_at ? h("small", {}, ` ${ago(s.last_health_check_at)}`) : null)],
            ["Tools", (s) => h("span", { title: s.tools.map((t) => t.name).join(", ") }, String(s.tools.length))],
            ["", (s) => actions(s)],
          ],
          page.items,
          { empty: "No MCP servers yet. Add one, or import a Claude Desktop config." },
        ),
        pager(page, (n) => {
          state.page = n;
          load();
        }),
      );
    } catch (error) {
      showError(slot, error);
    }
  }

  function actions(s) {
    const check = h("button", { type: "button", class: "small" }, "Check health");
    check.addEventListener("click", () => busy(check, slot, () => healthCheck(s)));
    const out = [check];
    if (mayChange(s)) {
      const toggle = h("button", { type: "button", class: "small" }, s.is_enabled ? "Disable" : "Enable");
      toggle.addEventListener("click", () =>
        busy(toggle, slot, async () => {
          await api("PATCH", `/mcp-servers/${s.id}`, { is_enabled: !s.is_enabled });
          await load();
        }),
      );
      out.push(
        toggle,
        confirmButton("Delete", "Delete?", async () => {
          await api("DELETE", `/mcp-servers/${s.id}`);
          fill(slot, notice(`Server “${s.name}” deleted.`));
          await load();
        }, { slot }),
      );
    }
    return h("div", { class: "actions lib-row-actions" }, out);
  }

  async function healthCheck(s) {
    fill(result, h("section", { class: "card lib-health", "aria-label": "Health check" }, h("p", { class: "muted" }, `Checking ${s.name}…`)));
    let r;
    try {
      r = await api("POST", `/mcp-servers/${s.id}/health-check`);
    } catch (error) {
      fill(result);
      throw error;
    }
    const close = h("button", { type: "button", class: "small", onclick: () => fill(result) }, "Close");
    const facts = [
      ["Latency", `${Math.round(r.latency_ms)} ms`],
      r.server_name ? ["Server", `${r.server_name}${r.server_version ? ` ${r.server_version}` : ""}`] : null,
      r.protocol_version ? ["Protocol", r.protocol_version] : null,
      r.resources ? ["Resources", String(r.resources.length)] : null,
      r.prompts ? ["Prompts", String(r.prompts.length)] : null,
      ["Checked", when(r.checked_at)],
    ].filter(Boolean);
    fill(
      result,
      h(
        "section",
        { class: "card lib-health", "aria-label": "Health check" },
        h("div", { class: "lib-report-head" }, h("h3", {}, `Health of ${s.name} `, badge(r.status)), close),
        h("dl", { class: "lib-dl" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        r.error ? h("div", { class: "error lib-exec-error" }, r.error) : null,
        r.status === "healthy" ? [h("h4", {}, `Tools (${r.tools.length})`), toolList(r.tools)] : null,
      ),
    );
    await load();
  }

  async function openAdd() {
    panel.dataset.open = "add";
    const formSlot = h("div", { class: "messages" });
    if (catalogue === null) {
      try {
        catalogue = (await api("GET", "/mcp-servers/templates?page_size=100")).items;
      } catch (error) {
        catalogue = [];
        showError(formSlot, error);
      }
    }
    // stdio servers run commands on the host: this console offers them to administrators only.
    const offered = catalogue.filter((t) => admin || t.server_type !== "stdio");
    const kinds = [["http", "Remote server (HTTP)"], ["sse", "Remote server (SSE)"]];
    if (admin) kinds.push(["stdio", "Command on this host (stdio)"]);
    if (offered.length) kinds.push(["catalogue", "From the catalogue"]);
    const kind = select("kind", kinds, "http");
    const config = h("div", { class: "lib-config" });
    const name = h("input", { name: "name", pattern: "[A-Za-z0-9_\\-]{1,64}", maxlength: 64, autocomplete: "off" });
    const nameHint = h("small", {}, "Letters, digits, _ and -; the agent sees its tools as mcp__<name>__<tool>.");
    const showConfig = () => {
      const k = kind.value;
      name.required = k !== "catalogue";
      name.placeholder = k === "catalogue" ? "Optional: the template's id" : "";
      if (k === "http" || k === "sse") {
        fill(
          config,
          field("URL", h("input", { name: "url", type: "url", required: true, placeholder: "https://mcp.example.com/mcp" })),
          field("Headers", h("textarea", { name: "headers", rows: 2, placeholder: "Authorization: Bearer …", spellcheck: "false" }), "One “Name: value” per line; stored encrypted."),
        );
      } else if (k === "stdio") {
        fill(
          config,
          field("Command", h("input", { name: "command", required: true, placeholder: "npx", spellcheck: "false" })),
          field("Arguments", h("textarea", { name: "args", rows: 2, placeholder: "-y\n@modelcontextprotocol/server-memory", spellcheck: "false" }), "One per line; run as an argv, never through a shell."),
          field("Environment", h("textarea", { name: "env", rows: 2, placeholder: "API_KEY=…", spellcheck: "false" }), "One NAME=value per line; stored encrypted."),
        );
      } else {
        const choice = select("template", offered.map((t) => [t.id, t.name]), offered[0].id);
        const about = h("div", { class: "lib-template-about" });
        const showTemplate = () => {
          const t = offered.find((x) => x.id === choice.value);
          fill(
            about,
            h("p", { class: "muted" }, t.description, " ", h("a", { href: t.docs, target: "_blank", rel: "noopener noreferrer" }, "Docs")),
            Object.entries(t.placeholders || {}).map(([key, what]) => field(key, h("input", { "data-value": key, required: true, spellcheck: "false" }), what)),
            (t.env || []).map((e) => field(`${e.name}${e.required ? "" : " (optional)"}`, h("input", { "data-env": e.name, required: e.required, spellcheck: "false" }), e.description)),
          );
        };
        choice.addEventListener("change", showTemplate);
        fill(config, field("Template", choice), about);
        showTemplate();
      }
    };
    kind.addEventListener("change", showConfig);
    showConfig();
    const submit = h("button", { type: "submit", class: "primary" }, "Add");
    const form = h(
      "form",
      { class: "card form-grid", "aria-label": "Add an MCP server" },
      h("h2", {}, "Add an MCP server"),
      formSlot,
      field("Kind", kind),
      field("Name", name, nameHint),
      field("Description", h("input", { name: "description", maxlength: 2000 })),
      config,
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "is_enabled", checked: true }), " Enabled"),
      admin ? h("label", { class: "check" }, h("input", { type: "checkbox", name: "is_global" }), " Global: every user can use it") : null,
      h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: closePanel }, "Cancel")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(submit, formSlot, async () => {
        const data = new FormData(form);
        const text = (key) => String(data.get(key) || "").trim();
        const common = { is_enabled: data.get("is_enabled") !== null, is_global: data.get("is_global") !== null };
        if (text("name")) common.name = text("name");
        if (text("description")) common.description = text("description");
        let body;
        if (kind.value === "catalogue") {
          const values = {};
          const env = {};
          for (const input of config.querySelectorAll("[data-value]")) values[input.dataset.value] = input.value.trim();
          for (const input of config.querySelectorAll("[data-env]")) if (input.value.trim()) env[input.dataset.env] = input.value.trim();
          body = { ...common, template: text("template"), values, env };
        } else if (kind.value === "stdio") {
          const args = String(data.get("args") || "").split("\n").map((a) => a.trim()).filter(Boolean);
          body = { ...common, server_type: "stdio", config: { command: text("command"), args, env: pairs(data.get("env"), "=") } };
        } else {
          body = { ...common, server_type: kind.value, config: { url: text("url"), headers: pairs(data.get("headers"), ":") } };
        }
        const created = await api("POST", "/mcp-servers", body);
        closePanel();
        fill(slot, notice(`Server “${created.name}” added. Check its health to see its tools.`));
        await load();
      });
    });
    fill(panel, form);
    kind.focus();
  }

  function openImport() {
    panel.dataset.open = "import";
    const formSlot = h("div", { class: "messages" });
    const file = h("input", { type: "file", name: "file", accept: ".json,application/json", required: true });
    const override = h("input", { type: "checkbox", name: "override_existing" });
    const submit = h("button", { type: "submit", class: "primary" }, "Import");
    const form = h(
      "form",
      { class: "card form-grid", "aria-label": "Import a Claude Desktop config" },
      h("h2", {}, "Import a Claude Desktop config"),
      h("p", { class: "muted" }, "A claude_desktop_config.json, or an export from here: ", h("code", {}, '{"mcpServers": {…}}'), ". Each entry is imported on its own; a bad one never stops the rest."),
      formSlot,
      field("Config file", file),
      h("label", { class: "check" }, override, " Replace servers that have the same name (otherwise they are skipped)"),
      h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: closePanel }, "Cancel")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!file.files.length) return;
      busy(submit, formSlot, async () => {
        const upload = new FormData();
        upload.append("file", file.files[0]);
        const response = await call("POST", `/mcp-servers/import${override.checked ? "?override_existing=true" : ""}`, upload);
        const outcome = await response.json();
        closePanel();
        showOutcome(outcome, file.files[0].name);
        await load();
      });
    });
    fill(panel, form);
    file.focus();
  }

  function showOutcome(outcome, filename) {
    const close = h("button", { type: "button", class: "small", onclick: () => fill(result) }, "Close");
    const names = (items, empty) => (items.length ? h("ul", { class: "lib-plain" }, items.map((n) => h("li", {}, n))) : h("p", { class: "muted" }, empty));
    fill(
      result,
      h(
        "section",
        { class: "card lib-outcome", "aria-label": "Import outcome" },
        h("div", { class: "lib-report-head" }, h("h3", {}, `Imported from ${filename}`), close),
        h("p", {}, outcome.summary),
        h(
          "div",
          { class: "lib-outcome-grid" },
          h("div", { class: "lib-outcome-imported" }, h("h4", {}, `Imported (${outcome.imported.length})`), names(outcome.imported, "None.")),
          h("div", { class: "lib-outcome-skipped" }, h("h4", {}, `Skipped (${outcome.skipped.length})`), outcome.skipped.length ? h("small", {}, "A server with that name exists.") : null, names(outcome.skipped, "None.")),
          h(
            "div",
            { class: "lib-outcome-errors" },
            h("h4", {}, `Errors (${outcome.errors.length})`),
            outcome.errors.length
              ? h("ul", { class: "lib-plain" }, outcome.errors.map((e) => h("li", {}, h("strong", {}, e.server), ": ", e.error)))
              : h("p", { class: "muted" }, "None."),
          ),
        ),
      ),
    );
  }

  await load();
}

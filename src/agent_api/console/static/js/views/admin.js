// Administration (admins only; anyone else sees the API's 403 message): system figures, users (create, disable and
// enable, make or remove admin, set a budget, reset a password), every user's sessions, and the audit log.
import { api, query, user } from "../api.js";
import { ago, badge, count, field, fill, folded, h, localDate, select, usd, when } from "../dom.js";
import { busy, confirmButton, errorBox, header, notice, pager, secretBox, showError, table } from "../ui.js";

const TABS = [
  ["overview", "Overview"],
  ["users", "Users"],
  ["sessions", "Sessions"],
  ["audit", "Audit log"],
];
const SESSION_STATUSES = ["", "created", "connecting", "active", "processing", "waiting", "paused", "completed", "failed", "archived"];
const ACTIONS = [
  ["", "Any action"],
  ["admin.*", "admin.* (all)"],
  ["admin.user_created", "admin.user_created"],
  ["admin.user_updated", "admin.user_updated"],
  ["admin.password_reset", "admin.password_reset"],
  ["auth.*", "auth.* (all)"],
  ["auth.login_failed", "auth.login_failed"],
  ["auth.refresh_reused", "auth.refresh_reused"],
  ["permission.*", "permission.* (all)"],
  ["permission.denied", "permission.denied"],
  ["permission.rule_remembered", "permission.rule_remembered"],
  ["budget.*", "budget.* (all)"],
  ["budget.blocked", "budget.blocked"],
  ["webhook.*", "webhook.* (all)"],
  ["webhook.created", "webhook.created"],
  ["webhook.deleted", "webhook.deleted"],
];

/** An audit event's details as one "key: value" line each (values as compact JSON). */
function detailsText(event) {
  const text = (value) => (typeof value === "string" ? value : JSON.stringify(value));
  return Object.entries(event.details || {})
    .map(([key, value]) =>
      // admin.user_updated records each changed field as [old, new].
      event.action === "admin.user_updated" && Array.isArray(value) && value.length === 2
        ? `${key}: ${text(value[0])} → ${text(value[1])}`
        : `${key}: ${text(value)}`,
    )
    .join("\n");
}
let lastTab = "overview";

/** The start of a local calendar day (a date input's value) as an ISO instant; `next` gives the day after's. */
function localDayStart(value, next = false) {
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + (next ? 1 : 0)).toISOString();
}

export async function render(main) {
  const me = user();
  const top = header("Admin");
  let stats;
  try {
    stats = await api("GET", "/admin/stats");
  } catch (error) {
    // A non-admin (403 admin_required) or any other failure: the API's message, never a blank page.
    fill(main, top, errorBox(error), h("p", { class: "muted" }, h("a", { href: "#/sessions" }, "Back to your sessions")));
    return;
  }

  // Usernames for ids (audit log, filters), read once when first needed.
  let people = null;
  async function users() {
    if (!people) {
      const page = await api("GET", "/admin/users?page_size=100");
      people = new Map(page.items.map((u) => [u.id, u.username]));
    }
    return people;
  }
  const nameOf = (id) => (id ? (people && people.get(id)) || `${id.slice(0, 8)}…` : "—");

  const panel = h("div", { class: "admin-panel", role: "tabpanel", id: "admin-panel", tabindex: "-1" });
  const tabs = TABS.map(([key, text]) => {
    const tab = h("button", { type: "button", role: "tab", id: `admin-tab-${key}`, "aria-controls": "admin-panel", class: "admin-tab" }, text);
    tab.addEventListener("click", () => show(key));
    tab.addEventListener("keydown", (event) => {
      const i = TABS.findIndex(([k]) => k === key);
      let j = null;
      if (event.key === "ArrowRight") j = (i + 1) % TABS.length;
      if (event.key === "ArrowLeft") j = (i - 1 + TABS.length) % TABS.length;
      if (event.key === "Home") j = 0;
      if (event.key === "End") j = TABS.length - 1;
      if (j === null) return;
      event.preventDefault();
      show(TABS[j][0]);
      tabs[j].focus();
    });
    return tab;
  });
  fill(main, top, h("div", { class: "admin-tabs", role: "tablist", "aria-label": "Admin sections" }, tabs), panel);

  let ticket = 0;
  function show(key) {
    lastTab = key;
    tabs.forEach((tab, i) => {
      const on = TABS[i][0] === key;
      tab.setAttribute("aria-selected", String(on));
      tab.setAttribute("tabindex", on ? "0" : "-1");
    });
    panel.setAttribute("aria-labelledby", `admin-tab-${key}`);
    const mine = ++ticket;
    const views = { overview, users: usersPanel, sessions: sessionsPanel, audit: auditPanel };
    Promise.resolve(views[key](mine)).catch((error) => {
      if (mine === ticket) fill(panel, errorBox(error));
    });
  }

  // --- overview ---------------------------------------------------------------------------------------------------

  async function overview(mine, fresh) {
    const figures = fresh || stats;
    const refresh = h("button", { type: "button", class: "small" }, "Refresh");
    const slot = h("div", { class: "messages" });
    refresh.addEventListener("click", () =>
      busy(refresh, slot, async () => {
        stats = await api("GET", "/admin/stats");
        if (mine === ticket) overview(mine, stats);
      }),
    );
    const usage = (title, u) =>
      h(
        "div",
        { class: "card stat-card" },
        h("h2", {}, title),
        h("p", { class: "stat-big" }, usd(u.cost_usd)),
        h("dl", { class: "stat-pairs" },
          h("dt", {}, "Turns"), h("dd", {}, count(u.turns)),
          h("dt", {}, "Tool calls"), h("dd", {}, count(u.tool_calls)),
          h("dt", {}, "Tokens"), h("dd", {}, `${count(u.input_tokens)} in · ${count(u.output_tokens)} out`)),
      );
    const byStatus = (map) => {
      const entries = Object.entries(map || {});
      return entries.length
        ? h("ul", { class: "status-counts" }, entries.sort((a, b) => b[1] - a[1]).map(([s, n]) => h("li", {}, badge(s), ` ${count(n)}`)))
        : h("p", { class: "muted" }, "None");
    };
    const u = figures.users;
    if (mine !== ticket) return;
    fill(
      panel,
      h("div", { class: "panel-head" }, h("p", { class: "muted" }, `Figures at ${when(figures.generated_at)}; “today” and “this month” are UTC.`), refresh),
      slot,
      h(
        "div",
        { class: "stat-grid" },
        h(
          "div",
          { class: "card stat-card" },
          h("h2", {}, "Users"),
          h("p", { class: "stat-big" }, count(u.total)),
          h("dl", { class: "stat-pairs" },
            h("dt", {}, "Enabled"), h("dd", {}, count(u.enabled)),
            h("dt", {}, "Disabled"), h("dd", {}, count(u.disabled)),
            h("dt", {}, "Admins"), h("dd", {}, count(u.admins)),
            h("dt", {}, "Active today"), h("dd", {}, count(u.active_today)),
            h("dt", {}, "Active this month"), h("dd", {}, count(u.active_this_month))),
        ),
        h("div", { class: "card stat-card" }, h("h2", {}, "Sessions"), h("p", { class: "stat-big" }, count(figures.sessions_total)), byStatus(figures.sessions_by_status)),
        h(
          "div",
          { class: "card stat-card" },
          h("h2", {}, "Right now"),
          h("dl", { class: "stat-pairs" },
            h("dt", {}, "Live agents"), h("dd", {}, count(figures.live_sdk_clients)),
            h("dt", {}, "Running turns"), h("dd", {}, count(figures.running_turns))),
          h("h3", { class: "stat-sub" }, "Task runs this month"),
          byStatus(figures.task_executions_by_status),
        ),
        usage("Today", figures.today),
        usage("This month", figures.this_month),
        h(
          "div",
          { class: "card stat-card" },
          h("h2", {}, "Top spenders this month"),
          figures.top_spenders.length
            ? h("ol", { class: "spenders" }, figures.top_spenders.map((s) => h("li", {}, h("span", {}, s.username), h("span", { class: "muted" }, `${usd(s.cost_usd)} · ${count(s.turns)} turns`))))
            : h("p", { class: "muted" }, "No spend yet this month."),
        ),
      ),
    );
  }

  // --- users ------------------------------------------------------------------------------------------------------

  const userState = { page: 1, search: "", role: "", active: "" };
  async function usersPanel(mine) {
    const slot = h("div", { class: "messages" });
    const secret = h("div", { class: "created-secret" });
    const creator = h("div", { class: "creator" });
    const list = h("div", { class: "list" });
    const search = h("input", { type: "search", name: "search", placeholder: "Username or email", "aria-label": "Search users", value: userState.search });
    const role = select("role", [["", "Any role"], ["admin", "Admins"], ["user", "Users"]], userState.role);
    role.setAttribute("aria-label", "Role");
    const active = select("active", [["", "Any state"], ["true", "Enabled"], ["false", "Disabled"]], userState.active);
    active.setAttribute("aria-label", "State");
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { userState.search = search.value.trim(); userState.page = 1; load(); }, 250);
    });
    role.addEventListener("change", () => { userState.role = role.value; userState.page = 1; load(); });
    active.addEventListener("change", () => { userState.active = active.value; userState.page = 1; load(); });
    const newButton = h("button", { type: "button", class: "primary", "aria-expanded": "false" }, "New user");
    newButton.addEventListener("click", () => toggleCreator());

    function toggleCreator() {
      if (creator.firstChild) {
        fill(creator);
        newButton.setAttribute("aria-expanded", "false");
        newButton.focus();
        return;
      }
      newButton.setAttribute("aria-expanded", "true");
      const formSlot = h("div", { class: "messages" });
      const username = h("input", { name: "username", required: true, minlength: 3, maxlength: 64, pattern: "[A-Za-z0-9_.\\-]+", autocomplete: "off" });
      const email = h("input", { type: "email", name: "email", maxlength: 320, autocomplete: "off" });
      const password = h("input", { type: "password", name: "password", required: true, minlength: 8, maxlength: 256, autocomplete: "new-password" });
      const isAdmin = h("input", { type: "checkbox", name: "is_admin" });
      const budget = h("input", { type: "number", name: "monthly_budget_usd", min: 0, step: "0.01", inputmode: "decimal" });
      const submit = h("button", { type: "submit", class: "primary" }, "Create user");
      const form = h(
        "form",
        { class: "card form-grid", "aria-label": "New user" },
        h("h2", {}, "New user"),
        formSlot,
        field("Username", username, "3–64 letters, digits, dots, dashes or underscores."),
        field("Email", email, "Optional; they can sign in with it too."),
        field("Password", password, "At least 8 characters. Give it to them yourself."),
        field("Monthly budget (USD)", budget, "Optional; empty: the server's default applies."),
        h("label", { class: "check" }, isAdmin, " Administrator"),
        h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: () => toggleCreator() }, "Cancel")),
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const body = { username: username.value.trim(), password: password.value, is_admin: isAdmin.checked };
        if (email.value.trim()) body.email = email.value.trim();
        if (budget.value !== "") body.monthly_budget_usd = Number(budget.value);
        busy(submit, formSlot, async () => {
          const created = await api("POST", "/admin/users", body);
          people = null;
          fill(creator);
          newButton.setAttribute("aria-expanded", "false");
          fill(secret, notice(`Created ${created.is_admin ? "administrator" : "user"} ${created.username}. They can sign in now.`));
          await load();
        });
      });
      fill(creator, form);
      username.focus();
    }

    async function patch(u, body, message) {
      await api("PATCH", `/admin/users/${u.id}`, body);
      people = null;
      fill(secret, notice(message));
      await load();
    }

    function budgetEditor(u, cell) {
      const input = h("input", { type: "number", min: 0, step: "0.01", value: u.monthly_budget_usd ?? "", "aria-label": `Monthly budget of ${u.username} (USD)`, placeholder: "Default" });
      const save = h("button", { type: "submit", class: "small primary" }, "Save");
      const form = h("form", { class: "inline-form" }, input, save, h("button", { type: "button", class: "small", onclick: () => load() }, "Cancel"));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const value = input.value === "" ? null : Number(input.value);
        busy(save, slot, () =>
          patch(u, { monthly_budget_usd: value }, value === null ? `${u.username} now has the default budget.` : `${u.username}'s budget is ${usd(value)} a month.`),
        );
      });
      fill(cell, form);
      input.focus();
    }

    function actionsOf(u) {
      const self = u.id === me.id;
      const cell = h("div", { class: "row-actions" });
      const budget = h("button", { type: "button", class: "small" }, "Budget…");
      budget.addEventListener("click", () => budgetEditor(u, cell));
      fill(
        cell,
        self
          ? null
          : u.is_active
            ? confirmButton("Disable", `Disable ${u.username}? They are signed out everywhere.`, () => patch(u, { is_active: false }, `Disabled ${u.username}.`), { slot })
            : confirmButton("Enable", `Enable ${u.username}?`, () => patch(u, { is_active: true }, `Enabled ${u.username}.`), { slot, danger: false }),
        self
          ? null
          : u.is_admin
            ? confirmButton("Remove admin", `Remove ${u.username}'s admin role?`, () => patch(u, { is_admin: false }, `${u.username} is no longer an administrator.`), { slot })
            : confirmButton("Make admin", `Make ${u.username} an administrator?`, () => patch(u, { is_admin: true }, `${u.username} is now an administrator.`), { slot, danger: false }),
        confirmButton(
          "Reset password",
          `Reset ${u.username}'s password? They are signed out everywhere (API keys keep working).`,
          async () => {
            const result = await api("POST", `/admin/users/${u.id}/reset-password`, {});
            fill(
              secret,
              secretBox(`Temporary password for ${u.username}`, result.temporary_password),
              h("p", { class: "muted" }, `Signed out of ${result.revoked_logins} login${result.revoked_logins === 1 ? "" : "s"}.`),
            );
            await load();
            secret.querySelector("button")?.focus();
          },
          { slot, danger: false },
        ),
        budget,
      );
      return cell;
    }

    let loads = 0;
    async function load() {
      const seq = ++loads;
      try {
        const page = await api(
          "GET",
          `/admin/users${query({ page: userState.page, page_size: 25, search: userState.search, role: userState.role, is_active: userState.active })}`,
        );
        if (mine !== ticket || seq !== loads) return;
        fill(
          list,
          table(
            [
              ["Username", (u) => h("span", { class: "username" }, h("strong", {}, u.username), u.id === me.id ? h("span", { class: "muted" }, " (you)") : null)],
              ["Email", (u) => u.email || h("span", { class: "muted" }, "—")],
              ["Role", (u) => h("span", { class: `badge role-${u.is_admin ? "admin" : "user"}` }, u.is_admin ? "admin" : "user")],
              ["State", (u) => badge(u.is_active ? "active" : "disabled")],
              ["Sessions", (u) => count(u.session_count)],
              ["Month cost", (u) => usd(u.current_month_cost_usd)],
              [
                "Budget",
                (u) =>
                  u.effective_budget_usd === null
                    ? h("span", { class: "muted" }, "Unlimited")
                    : h("span", { title: u.monthly_budget_usd === null ? "The server's default" : "Their own" }, usd(u.effective_budget_usd), u.monthly_budget_usd === null ? h("small", {}, " default") : null),
              ],
              ["Last sign-in", (u) => h("span", { title: u.last_login_at ? when(u.last_login_at) : null }, u.last_login_at ? ago(u.last_login_at) : "Never")],
              ["Actions", (u) => actionsOf(u)],
            ],
            page.items,
            { empty: "No user matches.", rowClass: (u) => (u.is_active ? null : "is-inactive") },
          ),
          page.total > 0 && pager(page, (n) => { userState.page = n; load(); }),
        );
        showError(slot, null);
      } catch (error) {
        showError(slot, error);
      }
    }

    fill(panel, h("div", { class: "filters" }, search, role, active, h("span", { class: "filters-spacer" }), newButton), secret, creator, slot, list);
    await load();
  }

  // --- sessions ---------------------------------------------------------------------------------------------------

  const sessionState = { page: 1, status: "" };
  async function sessionsPanel(mine) {
    const slot = h("div", { class: "messages" });
    const list = h("div", { class: "list" });
    const status = select("status", SESSION_STATUSES.map((s) => [s, s || "Any status"]), sessionState.status);
    status.setAttribute("aria-label", "Status");
    status.addEventListener("change", () => { sessionState.status = status.value; sessionState.page = 1; load(); });

    let loads = 0;
    async function load() {
      const seq = ++loads;
      try {
        const page = await api("GET", `/admin/sessions${query({ page: sessionState.page, page_size: 25, status: sessionState.status })}`);
        if (mine !== ticket || seq !== loads) return;
        fill(
          list,
          table(
            [
              ["Session", (s) => (s.user_id === me.id ? h("a", { href: `#/sessions/${s.id}` }, s.name || "Untitled session") : s.name || h("span", { class: "muted" }, "Untitled session"))],
              ["Owner", (s) => s.owner_username],
              ["Status", (s) => h("span", {}, badge(s.status), s.is_fork ? h("small", {}, " fork") : null)],
              ["Model", (s) => (s.model ? h("code", {}, s.model) : h("span", { class: "muted" }, "default"))],
              ["Turns", (s) => count(s.turn_count)],
              ["Tokens", (s) => `${count(s.total_input_tokens)} in · ${count(s.total_output_tokens)} out`],
              ["Cost", (s) => usd(s.total_cost_usd)],
              ["Created", (s) => when(s.created_at)],
              ["Last activity", (s) => h("span", { title: when(s.updated_at) }, ago(s.updated_at))],
            ],
            page.items,
            { empty: sessionState.status ? "No session has this status." : "No sessions yet." },
          ),
          page.total > 0 && pager(page, (n) => { sessionState.page = n; load(); }),
        );
        showError(slot, null);
      } catch (error) {
        showError(slot, error);
      }
    }
    fill(panel, h("div", { class: "filters" }, status), slot, list);
    await load();
  }

  // --- audit ------------------------------------------------------------------------------------------------------

  const auditState = { page: 1, action: "", actor_id: "", target_user_id: "", since: "", until: "" };
  async function auditPanel(mine) {
    const slot = h("div", { class: "messages" });
    const list = h("div", { class: "list" });
    try {
      await users();
    } catch {
      people = new Map();
    }
    if (mine !== ticket) return;
    const everyone = [...people.entries()].sort((a, b) => a[1].localeCompare(b[1]));
    const action = select("action", ACTIONS, auditState.action);
    const actor = select("actor_id", [["", "Anyone"], ...everyone], auditState.actor_id);
    const target = select("target_user_id", [["", "Any user"], ...everyone], auditState.target_user_id);
    const since = h("input", { type: "date", name: "since", value: auditState.since, max: localDate(new Date()) });
    const until = h("input", { type: "date", name: "until", value: auditState.until });
    const form = h(
      "form",
      { class: "filters audit-filters", "aria-label": "Filter the audit log" },
      field("Action", action),
      field("By", actor),
      field("Affecting", target),
      field("From", since),
      field("To (inclusive)", until),
    );
    form.addEventListener("change", () => {
      Object.assign(auditState, { action: action.value, actor_id: actor.value, target_user_id: target.value, since: since.value, until: until.value, page: 1 });
      load();
    });
    form.addEventListener("submit", (event) => event.preventDefault());

    let loads = 0;
    async function load() {
      const seq = ++loads;
      try {
        const params = {
          page: auditState.page,
          page_size: 25,
          action: auditState.action,
          actor_id: auditState.actor_id,
          target_user_id: auditState.target_user_id,
          since: auditState.since ? localDayStart(auditState.since) : "",
          until: auditState.until ? localDayStart(auditState.until, true) : "",
        };
        const page = await api("GET", `/admin/audit${query(params)}`);
        if (mine !== ticket || seq !== loads) return;
        fill(
          list,
          table(
            [
              ["When", (e) => h("span", { title: e.created_at }, when(e.created_at))],
              ["Action", (e) => h("code", { class: `audit-action audit-${e.action.split(".")[0]}` }, e.action)],
              ["By", (e) => nameOf(e.actor_id)],
              ["Affecting", (e) => nameOf(e.target_user_id)],
              ["Target", (e) => (e.target_type ? `${e.target_type}${e.target_id ? ` ${String(e.target_id).slice(0, 13)}` : ""}` : "—")],
              ["IP", (e) => e.ip_address || "—"],
              ["Details", (e) => (Object.keys(e.details || {}).length ? folded(detailsText(e), 6) : h("span", { class: "muted" }, "—"))],
            ],
            page.items,
            { empty: "No event matches." },
          ),
          page.total > 0 && pager(page, (n) => { auditState.page = n; load(); }),
        );
        showError(slot, null);
      } catch (error) {
        showError(slot, error);
      }
    }
    fill(panel, form, slot, list);
    await load();
  }

  show(lastTab);
}

// One task: its details and schedule, running it with a value for each {{variable}}, its executions (polled while
// one runs; cancel, open its session), and each execution's report in a sandboxed frame, or as PDF/JSON downloads.
import { api, ticketUrl } from "../api.js";
import { badge, fill, folded, h, usd, when } from "../dom.js";
import { MODE_NAMES, busy, confirmButton, header, notice, pager, showError } from "../ui.js";
import { describeCron, nextRunText, placeholders } from "./tasks.js";

const LIVE = new Set(["pending", "queued", "running"]);
const POLL_MS = 1500;

function duration(ms) {
  if (ms === null || ms === undefined) return null;
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s % 60);
  if (m < 60) return rest ? `${m} min ${rest} s` : `${m} min`;
  return m % 60 ? `${Math.floor(m / 60)} h ${m % 60} min` : `${Math.floor(m / 60)} h`;
}

/** A browser download through a single-use ticket URL (never the bearer token in a URL). */
async function downloadReport(reportId, format) {
  const url = await ticketUrl(`/reports/${reportId}/download?format=${format}`);
  const link = h("a", { href: url, download: `report-${reportId}.${format}`, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
}

function fillPrompt(template, values) {
  return String(template).replace(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g, (whole, name) =>
    values[name] !== undefined && values[name] !== "" ? String(values[name]) : whole,
  );
}

export async function render(main, { id }) {
  let task = await api("GET", `/tasks/${id}`);
  let timer = null;
  let gone = false;
  let wasLive = false;
  let newest = null; // the newest execution seen: last_run_at counts scheduled runs only
  const lastRun = () => {
    const started = newest && (newest.started_at || newest.created_at);
    return started && (!task.last_run_at || new Date(started) > new Date(task.last_run_at)) ? started : task.last_run_at;
  };
  const state = { page: 1 };

  const slot = h("div", { class: "messages" });
  const details = h("section", { class: "card lib-details", "aria-labelledby": "lib-details-title" });
  const runner = h("section", { class: "card lib-run", "aria-labelledby": "lib-run-title" });
  const viewer = h("div", { class: "lib-viewer" });
  const executions = h("div", { class: "lib-executions", "aria-live": "polite" });
  const paging = h("div");
  const titleSlot = h("div");

  fill(
    main,
    h("p", { class: "lib-back" }, h("a", { href: "#/tasks" }, "← Tasks")),
    titleSlot,
    slot,
    h("div", { class: "lib-columns" }, details, runner),
    viewer,
    h("h2", { class: "lib-section-title" }, "Executions"),
    executions,
    paging,
  );

  function showHeader() {
    const actions = [];
    if (task.schedule_cron) {
      const toggle = h("button", { type: "button" }, task.schedule_enabled ? "Pause schedule" : "Enable schedule");
      toggle.addEventListener("click", () =>
        busy(toggle, slot, async () => {
          task = await api("PATCH", `/tasks/${id}`, { schedule_enabled: !task.schedule_enabled });
          showHeader();
          showDetails();
        }),
      );
      actions.push(toggle);
    }
    actions.push(
      confirmButton("Delete", "Delete this task? Its runs and reports stay.", async () => {
        await api("DELETE", `/tasks/${id}`);
        location.hash = "#/tasks";
      }, { slot }),
    );
    fill(titleSlot, header(task.name, ...actions));
  }

  function row(term, ...value) {
    return [h("dt", {}, term), h("dd", {}, ...value)];
  }

  function showDetails() {
    const defaults = Object.entries(task.variables || {});
    const words = task.schedule_cron ? describeCron(task.schedule_cron) : null;
    fill(
      details,
      h("h2", { id: "lib-details-title" }, "Details"),
      task.description ? h("p", { class: "muted" }, task.description) : null,
      h(
        "dl",
        { class: "lib-dl" },
        row("Prompt template", folded(task.prompt_template, 8)),
        row("Default values", defaults.length ? h("ul", { class: "lib-plain" }, defaults.map(([k, v]) => h("li", {}, h("code", {}, k), " = ", String(v)))) : h("span", { class: "muted" }, "none")),
        row("Permission mode", MODE_NAMES[task.permission_mode] || task.permission_mode),
        row(
          "Schedule",
          task.schedule_cron
            ? [
                h("span", {}, words || `Cron “${task.schedule_cron}”`, " ", badge(task.schedule_enabled ? "active" : "paused")),
                h("small", { class: "lib-cron" }, h("code", {}, task.schedule_cron), ` · ${task.schedule_timezone} time`),
              ]
            : "Run by hand only",
        ),
        row("Next run", nextRunText(task)),
        row("Last run", when(lastRun())),
        row("Report", task.generate_report ? `made after each run (opens as ${task.report_format.toUpperCase()})` : "none"),
        row("Time limit", duration(task.timeout_seconds * 1000)),
        row("Created", when(task.created_at)),
      ),
    );
  }

  function showRunner() {
    const names = placeholders(task.prompt_template);
    const formSlot = h("div", { class: "messages" });
    const inputs = names.map((name) =>
      h("input", { name, value: task.variables && task.variables[name] !== undefined ? String(task.variables[name]) : "", autocomplete: "off" }),
    );
    const preview = h("pre", { class: "lib-preview" });
    const values = () => Object.fromEntries(inputs.filter((i) => i.value !== "").map((i) => [i.name, i.value]));
    const update = () => {
      preview.textContent = fillPrompt(task.prompt_template, values());
    };
    for (const input of inputs) input.addEventListener("input", update);
    update();
    const submit = h("button", { type: "submit", class: "primary" }, "Run now");
    const form = h(
      "form",
      { "aria-label": "Run the task" },
      h("h2", { id: "lib-run-title" }, "Run it"),
      formSlot,
      names.length
        ? inputs.map((input) => h("label", { class: "field" }, h("span", { class: "field-label" }, `{{${input.name}}}`), input))
        : h("p", { class: "muted" }, "This prompt has no {{variables}}."),
      h("div", { class: "field" }, h("span", { class: "field-label" }, "Prompt"), preview),
      h("div", { class: "form-actions" }, submit),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(submit, formSlot, async () => {
        const execution = await api("POST", `/tasks/${id}/execute`, { variables: values() });
        fill(formSlot, notice(`Run started (${execution.status}); it is listed under Executions.`));
        state.page = 1;
        await loadExecutions();
      });
    });
    fill(runner, form);
  }

  async function openReport(execution) {
    const frameSlot = h("div", { class: "messages" });
    const close = h("button", { type: "button", class: "small" }, "Close");
    const pdf = h("button", { type: "button", class: "small" }, "Download PDF");
    const json = h("button", { type: "button", class: "small" }, "Download JSON");
    pdf.addEventListener("click", () => busy(pdf, frameSlot, () => downloadReport(execution.report_id, "pdf")));
    json.addEventListener("click", () => busy(json, frameSlot, () => downloadReport(execution.report_id, "json")));
    const frame = h("iframe", {
      class: "lib-report-frame",
      sandbox: "",
      referrerpolicy: "no-referrer",
      title: `Report of the run of ${when(execution.created_at)}`,
    });
    const card = h(
      "section",
      { class: "card lib-report", "aria-label": "Report" },
      h("div", { class: "lib-report-head" }, h("h3", {}, `Report · run of ${when(execution.created_at)}`), h("div", { class: "actions" }, pdf, json, close)),
      frameSlot,
      frame,
    );
    close.addEventListener("click", () => fill(viewer));
    fill(viewer, card);
    card.scrollIntoView({ block: "nearest" });
    try {
      frame.src = await ticketUrl(`/reports/${execution.report_id}/view`);
    } catch (error) {
      showError(frameSlot, error);
    }
  }

  function executionCard(execution) {
    const cardSlot = h("div", { class: "messages" });
    const actions = [];
    if (LIVE.has(execution.status)) {
      const cancel = h("button", { type: "button", class: "small danger" }, "Cancel");
      cancel.addEventListener("click", () =>
        busy(cancel, cardSlot, async () => {
          await api("POST", `/tasks/executions/${execution.id}/cancel`);
          await loadExecutions();
        }),
      );
      actions.push(cancel);
    }
    if (execution.session_id) actions.push(h("a", { class: "button small", href: `#/sessions/${execution.session_id}` }, "Open session"));
    if (execution.report_id) {
      const view = h("button", { type: "button", class: "small primary" }, "View report");
      view.addEventListener("click", () => openReport(execution));
      const pdf = h("button", { type: "button", class: "small" }, "PDF");
      pdf.addEventListener("click", () => busy(pdf, cardSlot, () => downloadReport(execution.report_id, "pdf")));
      const json = h("button", { type: "button", class: "small" }, "JSON");
      json.addEventListener("click", () => busy(json, cardSlot, () => downloadReport(execution.report_id, "json")));
      actions.push(view, pdf, json);
    }
    const vars = Object.entries(execution.variables || {});
    const result = execution.result_data && execution.result_data.result;
    const took = duration(execution.duration_ms);
    return h(
      "article",
      { class: "card lib-exec", "data-execution": execution.id },
      h(
        "div",
        { class: "lib-exec-head" },
        badge(execution.status),
        h("span", { class: "lib-chip" }, execution.trigger_type),
        h("span", { title: execution.created_at }, when(execution.scheduled_for || execution.created_at)),
        took ? h("span", { class: "muted" }, took) : LIVE.has(execution.status) ? h("span", { class: "muted" }, "in progress…") : null,
        h("span", { class: "muted" }, usd(execution.total_cost_usd)),
      ),
      vars.length ? h("p", { class: "lib-vars" }, vars.map(([k, v]) => h("span", { class: "lib-chip" }, `${k} = ${v}`))) : null,
      result ? folded(result, 6) : null,
      execution.error_message || execution.error_code
        ? h("div", { class: "error lib-exec-error" }, execution.error_code ? h("strong", {}, `${execution.error_code}: `) : null, execution.error_message || "")
        : null,
      execution.result_data && execution.result_data.report_error ? h("p", { class: "muted" }, `No report: ${execution.result_data.report_error}`) : null,
      cardSlot,
      actions.length ? h("div", { class: "actions" }, actions) : null,
    );
  }

  // Cards kept by id with the JSON they show, so a poll replaces only what changed (no flicker, focus kept).
  let shown = [];
  function showExecutions(items) {
    const keys = items.map((e) => e.id).join();
    if (!items.length) {
      shown = [];
      fill(executions, h("p", { class: "empty" }, "No runs yet. Start one with Run now."));
      return;
    }
    if (keys !== shown.map((s) => s.id).join()) {
      shown = items.map((e) => ({ id: e.id, json: JSON.stringify(e), el: executionCard(e) }));
      fill(executions, shown.map((s) => s.el));
      return;
    }
    items.forEach((execution, i) => {
      const json = JSON.stringify(execution);
      if (shown[i].json === json) return;
      const el = executionCard(execution);
      shown[i].el.replaceWith(el);
      shown[i] = { id: execution.id, json, el };
    });
  }

  async function loadExecutions() {
    clearTimeout(timer);
    try {
      const page = await api("GET", `/tasks/${id}/executions?page=${state.page}&page_size=10`);
      if (gone) return;
      showExecutions(page.items);
      if (state.page === 1 && page.items[0] && page.items[0].id !== (newest && newest.id)) {
        newest = page.items[0];
        showDetails();
      }
      fill(paging, pager(page, (n) => {
        state.page = n;
        loadExecutions();
      }));
      const live = page.items.some((e) => LIVE.has(e.status));
      if (live) {
        timer = setTimeout(loadExecutions, POLL_MS);
      } else if (wasLive) {
        // a run just ended: the schedule's next and last slots may have moved meanwhile
        const fresh = await api("GET", `/tasks/${id}`);
        if (!gone && (fresh.last_run_at !== task.last_run_at || fresh.next_run_at !== task.next_run_at)) {
          task = fresh;
          showDetails();
        }
      }
      wasLive = live;
    } catch (error) {
      if (!gone) showError(slot, error);
    }
  }

  showHeader();
  showDetails();
  showRunner();
  await loadExecutions();
  return () => {
    gone = true;
    clearTimeout(timer);
  };
}

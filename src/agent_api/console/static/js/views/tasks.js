// The caller's tasks: name, schedule (in words, with the next run), last run; create one with a prompt template
// and its {{variables}}, a cron schedule and its time zone; delete. Also helpers the task view shares (a cron
// schedule in words, a prompt's {{variables}}).
import { api, query } from "../api.js";
import { ago, field, fill, h, select, when } from "../dom.js";
import { MODES, busy, confirmButton, header, notice, pager, showError, table } from "../ui.js";

const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

/** The {{variables}} of a prompt template, in order, each once (the server's own rule). */
export function placeholders(template) {
  return [...new Set([...String(template || "").matchAll(PLACEHOLDER)].map((m) => m[1]))];
}

// ---- cron in words -------------------------------------------------------------------------------------------

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAY_ABBR = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const MONTH_ABBR = MONTHS.map((m) => m.slice(0, 3).toLowerCase());

function numberOf(token, names, offset) {
  const lower = token.toLowerCase();
  const index = names ? names.indexOf(lower) : -1;
  if (index >= 0) return index + offset;
  return /^\d+$/.test(token) ? Number(token) : NaN;
}

/** One cron field as a list of items: {from, to, step} (to === from for a single value), or null for "*". */
function parseField(text, names, offset) {
  if (text === "*" || text === "?") return null;
  const items = [];
  for (const part of text.split(",")) {
    const [range, stepText] = part.split("/");
    const step = stepText === undefined ? 1 : Number(stepText);
    let from;
    let to;
    if (range === "*") {
      from = "*";
      to = "*";
    } else if (range.includes("-")) {
      const [a, b] = range.split("-");
      from = numberOf(a, names, offset);
      to = numberOf(b, names, offset);
    } else {
      from = numberOf(range, names, offset);
      to = stepText === undefined ? from : "*";
    }
    if ((from !== "*" && Number.isNaN(from)) || (to !== "*" && Number.isNaN(to)) || !(step >= 1)) return undefined;
    items.push({ from, to, step });
  }
  return items;
}

const single = (items) => items && items.length === 1 && items[0].from === items[0].to && items[0].from !== "*";
const singles = (items) => items && items.every((i) => i.from === i.to && i.from !== "*");
const pad = (n) => String(n).padStart(2, "0");

function listWords(words) {
  if (words.length <= 1) return words.join("");
  return `${words.slice(0, -1).join(", ")} and ${words[words.length - 1]}`;
}

/** Values and plain ranges in words ("Monday to Friday and Sunday"); null for steps inside a field. */
function itemWords(items, name) {
  if (items.some((i) => i.step !== 1 || i.from === "*" || i.to === "*")) return null;
  return listWords(items.map((i) => (i.from === i.to ? name(i.from) : `${name(i.from)} to ${name(i.to)}`)));
}

function everyStep(items) {
  // "*/15" -> 15; null when the field is not a plain step over its whole range
  return items && items.length === 1 && items[0].from === "*" && items[0].to === "*" ? items[0].step : null;
}

const past = (m) => (m === 0 ? "on the hour" : `at ${m} minutes past`);

function timeWords(minute, hour) {
  const minuteStep = minute === null ? 1 : everyStep(minute);
  const hourStep = everyStep(hour);
  if (hour === null && minuteStep) return minuteStep === 1 ? "every minute" : `every ${minuteStep} minutes`;
  if (single(minute) && hour === null) return `every hour, ${past(minute[0].from)}`;
  if (single(minute) && hourStep) return `every ${hourStep} hours, ${past(minute[0].from)}`;
  if (singles(minute) && singles(hour) && minute.length * hour.length <= 6) {
    const times = [];
    for (const hh of hour) for (const mm of minute) times.push(`${pad(hh.from)}:${pad(mm.from)}`);
    return `at ${listWords(times)}`;
  }
  const hours = hour && itemWords(hour, (n) => `${pad(n)}:00`);
  if (single(minute) && hours) return `every hour ${past(minute[0].from)} (hours ${hours})`;
  if (minuteStep && hours) return `every ${minuteStep === 1 ? "minute" : `${minuteStep} minutes`} (hours ${hours})`;
  return null;
}

function dayWords(dom, dow) {
  const dayName = (n) => DAYS[n % 7];
  if (dom === null && dow === null) return "every day";
  const days = dom && itemWords(dom, String);
  const weekdays = dow && itemWords(dow, dayName);
  if (dom === null) {
    if (!weekdays) return null;
    const workweek = dow.length === 1 && dow[0].from === 1 && dow[0].to === 5;
    return workweek ? "on weekdays (Monday to Friday)" : `on ${weekdays}`;
  }
  if (!days) return null;
  const monthDays = `on day${singles(dom) && dom.length === 1 ? "" : "s"} ${days} of the month`;
  if (dow === null) return monthDays;
  return weekdays ? `${monthDays} and on every ${weekdays}` : null;
}

/** A five-field cron expression (minute hour day month weekday) in words, or null when it cannot be put simply. */
export function describeCron(expression) {
  const fields = String(expression || "").trim().split(/\s+/);
  if (fields.length !== 5 || !fields[0]) return null;
  const [minute, hour, dom] = fields.slice(0, 3).map((f) => parseField(f));
  const month = parseField(fields[3], MONTH_ABBR, 1);
  const dow = parseField(fields[4], DAY_ABBR, 0);
  if ([minute, hour, dom, month, dow].includes(undefined)) return null;
  const time = timeWords(minute, hour);
  const days = dayWords(dom, dow);
  const months = month === null ? "" : itemWords(month, (n) => MONTHS[(n - 1) % 12]);
  if (!time || !days || months === null) return null;
  let text;
  if (days === "every day") text = time.startsWith("at ") ? `every day ${time}` : time;
  else text = `${time}${time.startsWith("at ") ? "" : ","} ${days}`;
  if (months) text += ` in ${months}`;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** How a task's schedule reads: "Every day at 09:00, Europe/Paris time", or "Run by hand only". */
export function scheduleText(task) {
  if (!task.schedule_cron) return "Run by hand only";
  const words = describeCron(task.schedule_cron) || `Cron “${task.schedule_cron}”`;
  return `${words}, ${task.schedule_timezone || "UTC"} time`;
}

/** When it runs next: the API's next_run_at in the viewer's time zone, or why there is none. */
export function nextRunText(task) {
  if (!task.schedule_cron) return "—";
  if (!task.schedule_enabled) return "Schedule off";
  if (task.next_run_at) return when(task.next_run_at);
  return scheduleText(task);
}

function cronHint(text) {
  const n = text.split(/\s+/).length;
  return n === 5 ? "A schedule the server will check; its next run shows once saved." : `Five fields (minute hour day month weekday); this has ${n}.`;
}

const VIEWER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function zoneList() {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    // an older browser: the field still takes any IANA name
  }
  return h("datalist", { id: "lib-time-zones" }, ["UTC", ...zones].map((z) => h("option", { value: z })));
}

// ---- the list ------------------------------------------------------------------------------------------------

export async function render(main) {
  const state = { page: 1, search: "" };
  const list = h("div", { class: "list" });
  const slot = h("div", { class: "messages" });
  const creator = h("div", { class: "creator" });

  const searchBox = h("input", { type: "search", name: "search", placeholder: "Search by name", "aria-label": "Search tasks" });
  let timer = null;
  searchBox.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.search = searchBox.value.trim();
      state.page = 1;
      load();
    }, 250);
  });
  const newButton = h("button", { type: "button", class: "primary" }, "New task");
  newButton.addEventListener("click", () => openCreator(creator, slot, load));

  fill(main, header("Tasks", newButton), creator, h("div", { class: "filters" }, searchBox), slot, list);

  async function load() {
    try {
      const page = await api("GET", `/tasks${query({ page: state.page, page_size: 20, search: state.search })}`);
      fill(
        list,
        table(
          [
            ["Name", (t) => h("a", { href: `#/tasks/${t.id}` }, t.name)],
            ["Schedule", (t) => h("span", { title: t.schedule_cron || "" }, scheduleText(t))],
            ["Enabled", (t) => (t.schedule_cron ? h("span", { class: `badge ${t.schedule_enabled ? "status-active" : ""}` }, t.schedule_enabled ? "on" : "off") : "—")],
            ["Next run", (t) => nextRunText(t)],
            ["Last run", (t) => lastRunCell(t)],
            ["Runs", (t) => String(t.execution_count)],
            ["", (t) => confirmButton("Delete", `Delete “${t.name}”?`, async () => { await api("DELETE", `/tasks/${t.id}`); load(); }, { slot })],
          ],
          page.items,
          { empty: state.search ? "No task matches." : "No tasks yet. Make one with New task." },
        ),
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
  await load();
  return () => clearTimeout(timer);
}

/** The newest run, manual or scheduled: the API's last_run_at counts only scheduled slots, so a task that has
 * runs asks for its newest execution (filled in when it arrives, in a cell already sized for it). */
function lastRunCell(task) {
  const cell = h("span", { class: "lib-last-run" });
  const show = (iso) => {
    cell.title = iso ? when(iso) : "";
    cell.textContent = iso ? ago(iso) : "never";
  };
  show(task.last_run_at);
  if (task.execution_count > 0) {
    api("GET", `/tasks/${task.id}/executions?page_size=1`)
      .then((page) => {
        const newest = page.items[0] && (page.items[0].started_at || page.items[0].created_at);
        if (newest && (!task.last_run_at || new Date(newest) > new Date(task.last_run_at))) show(newest);
      })
      .catch(() => {});
  }
  return cell;
}

function openCreator(creator, pageSlot, reload) {
  if (creator.firstChild) {
    fill(creator);
    return;
  }
  const slot = h("div", { class: "messages" });
  const prompt = h("textarea", { name: "prompt_template", rows: 4, required: true, placeholder: "Summarise the open issues of {{repo}} for {{audience}}" });
  const defaults = h("div", { class: "lib-defaults" });
  const cron = h("input", { name: "schedule_cron", placeholder: "0 9 * * 1-5", autocomplete: "off", spellcheck: "false" });
  const cronWords = h("span", { class: "lib-cron-words", "aria-live": "polite" }, "Leave empty to run it by hand only.");
  const zone = h("input", { name: "schedule_timezone", value: VIEWER_ZONE, list: "lib-time-zones", autocomplete: "off" });
  const enabled = h("input", { type: "checkbox", name: "schedule_enabled", checked: true });

  const kept = {};
  function showDefaults() {
    for (const input of defaults.querySelectorAll("input")) kept[input.dataset.name] = input.value;
    const names = placeholders(prompt.value);
    if (!names.length) {
      fill(defaults);
      return;
    }
    fill(
      defaults,
      h(
        "fieldset",
        { class: "field" },
        h("legend", {}, "Default values"),
        h("small", {}, "Used when a run gives no value; leave empty to require one."),
        names.map((name) => field(`{{${name}}}`, h("input", { "data-name": name, value: kept[name] || "", autocomplete: "off" }))),
      ),
    );
  }
  prompt.addEventListener("input", showDefaults);
  cron.addEventListener("input", () => {
    const text = cron.value.trim();
    cronWords.textContent = !text ? "Leave empty to run it by hand only." : describeCron(text) || cronHint(text);
  });

  const submit = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form",
    { class: "card form-grid", "aria-label": "New task" },
    h("h2", {}, "New task"),
    slot,
    field("Name", h("input", { name: "name", required: true, maxlength: 200 })),
    field("Description", h("input", { name: "description", maxlength: 5000 })),
    field("Prompt template", prompt, "Write {{name}} where a run fills in a value."),
    defaults,
    field("Permission mode", select("permission_mode", MODES, "default"), "Scheduled runs have nobody to ask: bypass or accept edits suit them."),
    h(
      "fieldset",
      { class: "field lib-schedule" },
      h("legend", {}, "Schedule"),
      h("label", { class: "field" }, h("span", { class: "field-label" }, "Cron (minute hour day month weekday)"), cron, cronWords),
      field("Time zone", zone),
      zoneList(),
      h("label", { class: "check" }, enabled, " Enabled"),
    ),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "generate_report", checked: true }), " Make a report of each run"),
    h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: () => fill(creator) }, "Cancel")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: String(data.get("name") || "").trim(),
      prompt_template: String(data.get("prompt_template") || ""),
      permission_mode: String(data.get("permission_mode") || "default"),
      generate_report: data.get("generate_report") !== null,
      variables: {},
    };
    const description = String(data.get("description") || "").trim();
    if (description) body.description = description;
    for (const input of defaults.querySelectorAll("input")) if (input.value !== "") body.variables[input.dataset.name] = input.value;
    const expression = cron.value.trim();
    if (expression) {
      body.schedule_cron = expression;
      body.schedule_timezone = zone.value.trim() || "UTC";
      body.schedule_enabled = enabled.checked;
    }
    busy(submit, slot, async () => {
      const task = await api("POST", "/tasks", body);
      fill(creator);
      const next = task.schedule_cron ? ` Next run: ${nextRunText(task)}.` : "";
      fill(pageSlot, notice(`Task “${task.name}” created.${next}`));
      await reload();
    });
  });
  fill(creator, form);
  form.querySelector("input").focus();
}

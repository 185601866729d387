// What the caller (or, for an admin, any user) spends: this month's budget as a meter, spend per day over the last
// 30 days as an SVG bar chart (with a table of the same numbers), and the spend by session and by model for a
// period the API names (today, this week, this month) or the last 30 days.
import { api, query, user } from "../api.js";
import { count, fill, h, usd, when } from "../dom.js";
import { errorBox, header, showError, table } from "../ui.js";

const SVG = "http://www.w3.org/2000/svg";
const DAYS = 30;
const PERIODS = [
  ["daily", "Today"],
  ["weekly", "This week"],
  ["monthly", "This month"],
  ["last30", "Last 30 days"],
];
const dayLabel = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
const longDay = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", year: "numeric", timeZone: "UTC" });
const utcDate = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeZone: "UTC" });

let chartIds = 0;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** The first UTC midnight of the 30 days ending today, and each of those days as yyyy-mm-dd. */
function lastDays(now = new Date()) {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const days = [];
  for (let i = DAYS - 1; i >= 0; i--) days.push(new Date(today - i * 86_400_000).toISOString().slice(0, 10));
  return { start: `${days[0]}T00:00:00Z`, days };
}

/** A round step for about `ticks` grid lines up to `max`: 1, 2 or 5 times a power of ten. */
function niceStep(max, ticks = 4) {
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return step || power * 10;
}

function axisUsd(value, step) {
  if (value === 0) return "$0";
  const decimals = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  return `$${value.toFixed(decimals)}`;
}

/** The bar chart of `series` ([{day, cost_usd, turns}]) as an SVG element `width` px wide. */
function barChart(series, width, titleText, descText) {
  const height = 240;
  const margin = { top: 14, right: 10, bottom: 30, left: 58 };
  const plotW = Math.max(60, width - margin.left - margin.right);
  const plotH = height - margin.top - margin.bottom;
  const max = Math.max(0, ...series.map((d) => d.cost_usd));
  const step = max > 0 ? niceStep(max) : 0.01;
  const top = max > 0 ? Math.ceil(max / step) * step : step * 4;
  const y = (v) => margin.top + plotH - (v / top) * plotH;
  const band = plotW / series.length;
  const barW = Math.max(2, Math.min(28, band * 0.72));
  const id = `chart-${++chartIds}`;

  const root = svg(
    "svg",
    { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-desc` },
    svg("title", { id: `${id}-title` }, titleText),
    svg("desc", { id: `${id}-desc` }, descText),
  );
  const grid = svg("g", { class: "chart-grid", "aria-hidden": "true" });
  for (let v = 0; v <= top + step / 2; v += step) {
    const yy = Math.round(y(v)) + 0.5;
    grid.append(
      svg("line", { x1: margin.left, x2: margin.left + plotW, y1: yy, y2: yy, class: v === 0 ? "chart-axis" : null }),
      svg("text", { x: margin.left - 8, y: yy, class: "chart-label", "text-anchor": "end", "dominant-baseline": "middle" }, axisUsd(v, step)),
    );
  }
  root.append(grid);

  const bars = svg("g", { class: "chart-bars" });
  series.forEach((d, i) => {
    const x = margin.left + i * band + (band - barW) / 2;
    const h0 = d.cost_usd > 0 ? Math.max(1.5, (d.cost_usd / top) * plotH) : 0;
    const tip = `${longDay.format(new Date(`${d.day}T00:00:00Z`))}: ${usd(d.cost_usd)} · ${d.turns} turn${d.turns === 1 ? "" : "s"}`;
    // An invisible full-height hit area, so a tooltip also shows on days with no spend.
    bars.append(
      svg(
        "g",
        { class: d.cost_usd > 0 ? "chart-day" : "chart-day is-zero" },
        svg("title", {}, tip),
        svg("rect", { class: "chart-hit", x: margin.left + i * band, y: margin.top, width: band, height: plotH }),
        svg("rect", { class: "chart-bar", x: x.toFixed(1), y: (margin.top + plotH - h0).toFixed(1), width: barW.toFixed(1), height: h0.toFixed(1), rx: Math.min(3, barW / 4) }),
      ),
    );
  });
  root.append(bars);

  // Day labels: as many as fit, always including today (the last bar).
  const every = Math.max(1, Math.ceil(52 / band));
  const labels = svg("g", { class: "chart-x", "aria-hidden": "true" });
  series.forEach((d, i) => {
    if ((series.length - 1 - i) % every !== 0) return;
    const x = margin.left + i * band + band / 2;
    // The last label ends at the edge rather than past it.
    const atEdge = x + 24 > width;
    labels.append(
      svg("text", { x: atEdge ? width - 2 : x, y: height - 10, class: "chart-label", "text-anchor": atEdge ? "end" : "middle" }, dayLabel.format(new Date(`${d.day}T00:00:00Z`))),
    );
  });
  root.append(labels);
  if (max === 0) {
    root.append(svg("text", { x: margin.left + plotW / 2, y: margin.top + plotH / 2, class: "chart-empty", "text-anchor": "middle" }, "No spend in the last 30 days"));
  }
  return root;
}

function stat(label, value, hint) {
  return h("div", { class: "cost-stat" }, h("span", { class: "stat-label" }, label), h("strong", { class: "stat-value" }, value), hint ? h("small", {}, hint) : null);
}

function budgetCard(budget) {
  const spent = budget.current_month_cost_usd;
  const resets = utcDate.format(new Date(budget.period_end));
  const days = `${budget.days_remaining} day${budget.days_remaining === 1 ? "" : "s"} left in the month (resets ${resets}, UTC)`;
  if (budget.monthly_budget_usd === null) {
    return h(
      "section",
      { class: "card budget", "aria-labelledby": "budget-title" },
      h("h2", { id: "budget-title" }, "Monthly budget"),
      h("p", { class: "budget-figure" }, h("strong", {}, usd(spent)), " spent this month"),
      h("p", { class: "muted" }, "No monthly budget applies: spending is not limited. ", days, "."),
    );
  }
  const limit = budget.monthly_budget_usd;
  const percent = budget.percent_used ?? (limit > 0 ? (spent / limit) * 100 : 100);
  const meter = h("meter", {
    id: "budget-meter",
    min: 0,
    max: limit > 0 ? limit : 1,
    low: limit * 0.8,
    high: limit * 0.95,
    optimum: 0,
    value: Math.min(spent, limit > 0 ? limit : 1),
    "aria-valuetext": `${usd(spent)} of ${usd(limit)} used`,
  });
  return h(
    "section",
    { class: `card budget${budget.is_over_budget ? " is-over" : ""}`, "aria-labelledby": "budget-title" },
    h("h2", { id: "budget-title" }, "Monthly budget"),
    h(
      "p",
      { class: "budget-figure" },
      h("strong", {}, usd(budget.remaining_budget_usd ?? 0)),
      ` left of ${usd(limit)}`,
    ),
    h("label", { class: "meter-label", for: "budget-meter" }, `${usd(spent)} used (${percent.toFixed(percent < 10 ? 1 : 0)}%)`),
    meter,
    budget.is_over_budget
      ? h("p", { class: "budget-over", role: "status" }, "Over budget: new turns and task runs are refused until the month ends or the budget is raised.")
      : null,
    h("p", { class: "muted" }, days, "."),
  );
}

export async function render(main) {
  const me = user();
  const state = { userId: me.id, period: "monthly" };
  const slot = h("div", { class: "messages" });
  const budgetSlot = h("div", { class: "budget-slot" });
  const chartBox = h("div", { class: "chart-box" });
  const chartTotal = h("p", { class: "chart-total muted" });
  const chartTable = h("div", {});
  const breakdown = h("div", { class: "breakdown" });
  let series = [];
  let drawnWidth = 0;

  const periodButtons = PERIODS.map(([value, text]) => {
    const b = h("button", { type: "button", class: "period-option", "aria-pressed": String(value === state.period) }, text);
    b.addEventListener("click", () => {
      state.period = value;
      for (const other of periodButtons) other.setAttribute("aria-pressed", String(other === b));
      loadBreakdown();
    });
    return b;
  });

  let whose = null;
  if (me.role === "admin") {
    whose = h("select", { name: "user", "aria-label": "Whose costs" }, h("option", { value: me.id }, `${me.username} (you)`));
    whose.addEventListener("change", () => {
      state.userId = whose.value;
      loadAll();
    });
    api("GET", "/admin/users?page_size=100")
      .then((page) => {
        for (const u of page.items) if (u.id !== me.id) whose.append(h("option", { value: u.id }, u.username));
      })
      .catch(() => {});
  }

  fill(
    main,
    header("Costs", whose),
    slot,
    budgetSlot,
    h(
      "section",
      { class: "card chart-card", "aria-labelledby": "chart-title" },
      h("div", { class: "card-head" }, h("h2", { id: "chart-title" }, "Spend per day, last 30 days"), chartTotal),
      chartBox,
      h("p", { class: "chart-note" }, h("small", {}, "Days are UTC calendar days; a turn counts on the day it started.")),
      chartTable,
    ),
    h(
      "section",
      { class: "breakdown-section", "aria-labelledby": "breakdown-title" },
      h(
        "div",
        { class: "card-head" },
        h("h2", { id: "breakdown-title" }, "Breakdown"),
        h("div", { class: "period-switch", role: "group", "aria-label": "Period" }, periodButtons),
      ),
      breakdown,
    ),
  );

  function draw() {
    const width = Math.floor(chartBox.clientWidth) || 700;
    if (!series.length || width === drawnWidth) return;
    drawnWidth = width;
    const total = series.reduce((sum, d) => sum + d.cost_usd, 0);
    const top = series.reduce((best, d) => (d.cost_usd > best.cost_usd ? d : best), series[0]);
    const desc = total > 0
      ? `${usd(total)} in all over the last 30 days; the most, ${usd(top.cost_usd)}, on ${longDay.format(new Date(`${top.day}T00:00:00Z`))}.`
      : "No spend in the last 30 days.";
    fill(chartBox, barChart(series, width, "Spend per day over the last 30 days (US dollars)", desc));
  }

  async function loadChart() {
    const { start, days } = lastDays();
    const report = await api("GET", `/monitoring/costs/user/${state.userId}${query({ start, group_by: "day" })}`);
    const byDay = new Map(report.breakdown.map((b) => [b.key, b]));
    series = days.map((day) => {
      const b = byDay.get(day);
      return { day, cost_usd: b ? b.cost_usd : 0, turns: b ? b.turns : 0, input_tokens: b ? b.input_tokens : 0, output_tokens: b ? b.output_tokens : 0 };
    });
    fill(chartTotal, `${usd(report.total_cost_usd)} · ${count(report.total_turns)} turns`);
    drawnWidth = 0;
    draw();
    fill(
      chartTable,
      h(
        "details",
        { class: "chart-table" },
        h("summary", {}, "The same numbers as a table"),
        table(
          [
            ["Day (UTC)", (d) => longDay.format(new Date(`${d.day}T00:00:00Z`))],
            ["Cost", (d) => usd(d.cost_usd)],
            ["Turns", (d) => String(d.turns)],
            ["Tokens", (d) => `${count(d.input_tokens)} in · ${count(d.output_tokens)} out`],
          ],
          [...series].reverse(),
        ),
      ),
    );
  }

  async function loadBudget() {
    try {
      fill(budgetSlot, budgetCard(await api("GET", `/monitoring/costs/budget/${state.userId}`)));
    } catch (error) {
      fill(budgetSlot, errorBox(error));
    }
  }

  async function loadBreakdown() {
    const range = state.period === "last30" ? { start: lastDays().start } : { period: state.period };
    breakdown.setAttribute("aria-busy", "true");
    try {
      const [bySession, byModel] = await Promise.all([
        api("GET", `/monitoring/costs/user/${state.userId}${query({ ...range, group_by: "session" })}`),
        api("GET", `/monitoring/costs/user/${state.userId}${query({ ...range, group_by: "model" })}`),
      ]);
      const t = bySession;
      const own = state.userId === me.id;
      fill(
        breakdown,
        h(
          "div",
          { class: "stats-row" },
          stat("Cost", usd(t.total_cost_usd)),
          stat("Turns", count(t.total_turns)),
          stat("Sessions", count(t.total_sessions), t.total_sessions ? `${usd(t.average_cost_per_session)} each on average` : null),
          stat("Messages", count(t.total_messages)),
          stat("Tool calls", count(t.total_tool_calls)),
          stat("Tokens", count(t.total_tokens), `${count(t.total_input_tokens)} in · ${count(t.total_output_tokens)} out`),
        ),
        h("p", { class: "range-note" }, h("small", {}, `From ${when(t.start)} to ${when(t.end)} (your time).`)),
        h(
          "div",
          { class: "breakdown-tables" },
          h(
            "section",
            { "aria-labelledby": "by-session-title" },
            h("h3", { id: "by-session-title" }, "By session"),
            table(
              [
                ["Session", (b) => (own ? h("a", { href: `#/sessions/${b.key}` }, b.label || "Untitled session") : b.label || "Untitled session")],
                ["Turns", (b) => String(b.turns)],
                ["Tokens", (b) => `${count(b.input_tokens)} in · ${count(b.output_tokens)} out`],
                ["Cost", (b) => usd(b.cost_usd)],
              ],
              [...bySession.breakdown].sort((a, b) => b.cost_usd - a.cost_usd),
              { empty: "No turns in this period." },
            ),
          ),
          h(
            "section",
            { "aria-labelledby": "by-model-title" },
            h("h3", { id: "by-model-title" }, "By model"),
            table(
              [
                ["Model", (b) => h("code", {}, b.key)],
                ["Turns", (b) => String(b.turns)],
                ["Tokens", (b) => `${count(b.input_tokens)} in · ${count(b.output_tokens)} out`],
                ["Cost", (b) => usd(b.cost_usd)],
              ],
              byModel.breakdown,
              { empty: "No turns in this period." },
            ),
          ),
        ),
      );
    } catch (error) {
      fill(breakdown, errorBox(error));
    } finally {
      breakdown.removeAttribute("aria-busy");
    }
  }

  async function loadAll() {
    showError(slot, null);
    await Promise.all([
      loadBudget(),
      loadChart().catch((error) => {
        series = [];
        fill(chartBox, errorBox(error));
      }),
      loadBreakdown(),
    ]);
  }

  let frame = 0;
  const observer = typeof ResizeObserver === "function"
    ? new ResizeObserver(() => {
        cancelAnimationFrame(frame);
        frame = requestAnimationFrame(draw);
      })
    : null;
  if (observer) observer.observe(chartBox);

  await loadAll();
  return () => {
    if (observer) observer.disconnect();
    cancelAnimationFrame(frame);
  };
}

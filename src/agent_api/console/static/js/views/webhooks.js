// The caller's webhooks (an admin also sees the global ones): the list, registering one (its signing secret shown
// once), pausing and re-enabling, rotating the secret (shown once), sending a test, deleting, and each webhook's
// delivery log with a refresh button.
import { api, user } from "../api.js";
import { ago, badge, fill, folded, h, when } from "../dom.js";
import { busy, confirmButton, header, notice, pager, secretBox, showError, table } from "../ui.js";

const EVENTS = [
  ["turn.completed", "A turn finished"],
  ["turn.failed", "A turn failed, ended in error or was interrupted"],
  ["permission.requested", "A tool call waits for a person"],
  ["permission.decided", "A permission request was answered, timed out or cancelled"],
  ["session.status_changed", "A session changed status"],
  ["task_execution.completed", "A task execution finished"],
  ["task_execution.failed", "A task execution failed, timed out or was cancelled"],
  ["budget.warning", "The month's spend passed the warning level"],
  ["budget.exceeded", "The month's spend passed the budget"],
];
const PAUSED = "paused by its owner";
const POLL_MS = 5000;

function stateOf(webhook) {
  if (webhook.is_active) return "active";
  return webhook.disabled_reason === PAUSED ? "paused" : "disabled";
}

export async function render(main) {
  const timers = new Set();
  const state = { page: 1 };
  const slot = h("div", { class: "messages" });
  const created = h("div", { class: "created-secret" });
  const creator = h("div", { class: "creator" });
  const list = h("div", { class: "hooks" });
  const newButton = h("button", { type: "button", class: "primary", "aria-expanded": "false" }, "New webhook");
  newButton.addEventListener("click", () => toggleCreator());

  fill(
    main,
    header("Webhooks", newButton),
    h(
      "p",
      { class: "muted intro" },
      "A webhook sends signed events (Standard Webhooks) to a URL of yours when turns end, approvals wait or tasks run. " +
        "Failed deliveries are retried for about a day.",
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
    const url = h("input", { type: "url", name: "url", required: true, maxlength: 2048, placeholder: "https://example.com/hooks/agent-api", autocomplete: "off" });
    const boxes = EVENTS.map(([value]) => h("input", { type: "checkbox", name: "events", value }));
    const all = h("button", { type: "button", class: "link" }, "Select all");
    all.addEventListener("click", () => {
      const on = !boxes.every((b) => b.checked);
      for (const b of boxes) b.checked = on;
      all.textContent = on ? "Select none" : "Select all";
    });
    const description = h("textarea", { name: "description", rows: 2, maxlength: 1000, placeholder: "Optional: what receives these events" });
    const global = user().role === "admin" ? h("input", { type: "checkbox", name: "is_global" }) : null;
    const submit = h("button", { type: "submit", class: "primary" }, "Create webhook");
    const form = h(
      "form",
      { class: "card form-grid", "aria-label": "New webhook" },
      h("h2", {}, "New webhook"),
      formSlot,
      h("label", { class: "field" }, h("span", { class: "field-label" }, "URL"), url,
        h("small", {}, "http(s) to a public address; internal and private addresses are refused.")),
      h(
        "fieldset",
        { class: "field events-field" },
        h("legend", {}, "Events ", all),
        h(
          "div",
          { class: "event-choices" },
          EVENTS.map(([value, text], i) =>
            h("label", { class: "event-choice" }, boxes[i], h("span", {}, h("code", {}, value), h("small", {}, text))),
          ),
        ),
      ),
      h("label", { class: "field" }, h("span", { class: "field-label" }, "Description"), description),
      global
        ? h("label", { class: "check global-check" }, global, " Global: hears every user's events (administrators only)")
        : null,
      h("div", { class: "form-actions" }, submit, h("button", { type: "button", onclick: () => toggleCreator() }, "Cancel")),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const events = boxes.filter((b) => b.checked).map((b) => b.value);
      if (!events.length) {
        showError(formSlot, new Error("Choose at least one event."));
        boxes[0].focus();
        return;
      }
      const body = { url: url.value.trim(), events };
      if (description.value.trim()) body.description = description.value.trim();
      if (global && global.checked) body.is_global = true;
      busy(submit, formSlot, async () => {
        const hook = await api("POST", "/webhooks", body);
        fill(creator);
        newButton.setAttribute("aria-expanded", "false");
        fill(created, secretBox(`Signing secret for ${hook.url}`, hook.secret));
        await load();
        created.querySelector("button")?.focus();
      });
    });
    fill(creator, form);
    url.focus();
  }

  function hookCard(initial) {
    let hook = initial;
    const cardSlot = h("div", { class: "messages" });
    const head = h("div", { class: "hook-head" });
    const info = h("div", { class: "hook-info" });
    const actions = h("div", { class: "actions hook-actions" });
    const log = h("section", { class: "deliveries", hidden: true });
    const card = h("article", { class: "card hook", "aria-label": `Webhook ${hook.url}` }, head, info, actions, cardSlot, log);
    let logOpen = false;
    let logPage = 1;
    let poll = null;

    const logButton = h("button", { type: "button", "aria-expanded": "false" }, "Deliveries");
    logButton.addEventListener("click", () => {
      logOpen = !logOpen;
      logButton.setAttribute("aria-expanded", String(logOpen));
      log.hidden = !logOpen;
      if (logOpen) loadLog();
      else stopPolling();
    });

    function stopPolling() {
      if (poll) {
        clearTimeout(poll);
        timers.delete(poll);
        poll = null;
      }
    }

    // The log's heading and Refresh button stay put; only the table is redrawn, and a poll that finds nothing new
    // leaves it alone (so an open "Show all" or the focus is not lost every few seconds).
    const logSlot = h("div", { class: "messages" });
    const logBody = h("div", { class: "deliveries-body" });
    const refresh = h("button", { type: "button", class: "small" }, "Refresh");
    refresh.addEventListener("click", () => busy(refresh, logSlot, () => loadLog(true)));
    fill(log, h("div", { class: "deliveries-head" }, h("h3", {}, "Deliveries"), refresh), logSlot, logBody);
    let shown = "";

    async function loadLog(force = true) {
      stopPolling();
      try {
        const page = await api("GET", `/webhooks/${hook.id}/deliveries?page=${logPage}&page_size=10`);
        const json = JSON.stringify(page);
        if (force || json !== shown) {
          shown = json;
          fill(
            logBody,
            table(
              [
                ["Event", (d) => h("code", {}, d.event_type)],
                ["Status", (d) => badge(d.status)],
                ["Attempts", (d) => String(d.attempts)],
                [
                  "Last result",
                  (d) =>
                    h(
                      "div",
                      { class: "last-result" },
                      d.last_status_code ? h("span", {}, `HTTP ${d.last_status_code}`) : null,
                      d.last_error ? folded(d.last_error, 3) : null,
                      !d.last_status_code && !d.last_error ? h("span", { class: "muted" }, d.attempts ? "—" : "Not sent yet") : null,
                    ),
                ],
                ["Next attempt", (d) => (d.next_attempt_at && d.status === "pending" ? when(d.next_attempt_at) : "—")],
                ["Created", (d) => h("span", { title: when(d.created_at) }, ago(d.created_at))],
                ["Delivered", (d) => (d.delivered_at ? when(d.delivered_at) : "—")],
              ],
              page.items,
              { empty: "Nothing delivered yet. Send a test to see one here." },
            ),
            page.total > 0 && pager(page, (n) => {
              logPage = n;
              loadLog();
            }),
          );
        }
        showError(logSlot, null);
        if (logOpen && card.isConnected && page.items.some((d) => d.status === "pending")) {
          poll = setTimeout(() => {
            timers.delete(poll);
            poll = null;
            if (logOpen && card.isConnected) loadLog(false);
          }, POLL_MS);
          timers.add(poll);
        }
      } catch (error) {
        showError(logSlot, error);
      }
    }

    async function patch(body) {
      hook = await api("PATCH", `/webhooks/${hook.id}`, body);
      paint();
    }

    function paint() {
      const status = stateOf(hook);
      fill(
        head,
        h("code", { class: "hook-url" }, hook.url),
        h("span", { class: "hook-badges" }, badge(status), hook.is_global ? h("span", { class: "badge badge-global" }, "global") : null),
      );
      fill(
        info,
        hook.description ? h("p", { class: "hook-description" }, hook.description) : null,
        !hook.is_active && hook.disabled_reason
          ? h("p", { class: status === "paused" ? "hook-reason muted" : "hook-reason is-disabled" },
              status === "paused" ? "Paused by you: nothing is sent until you re-enable it." : `Disabled: ${hook.disabled_reason}`)
          : null,
        h("ul", { class: "event-chips", "aria-label": "Events" }, hook.events.map((e) => h("li", {}, e))),
        h("p", { class: "hook-dates" }, h("small", {}, `Created ${when(hook.created_at)} · updated ${ago(hook.updated_at)}`)),
      );
      const toggle = hook.is_active
        ? h("button", { type: "button" }, "Pause")
        : h("button", { type: "button", class: "primary" }, "Re-enable");
      toggle.addEventListener("click", () =>
        busy(toggle, cardSlot, async () => {
          await patch({ is_active: !hook.is_active });
          fill(cardSlot, notice(hook.is_active ? "Re-enabled: events are delivered again." : "Paused: its pending deliveries were failed."));
          actions.querySelector("button")?.focus();
          if (logOpen) loadLog();
        }),
      );
      const test = h("button", { type: "button", disabled: !hook.is_active, title: hook.is_active ? null : "Re-enable it to send a test" }, "Send test");
      test.addEventListener("click", () =>
        busy(test, cardSlot, async () => {
          await api("POST", `/webhooks/${hook.id}/test`);
          fill(cardSlot, notice("Test event queued: see it in the deliveries below."));
          logOpen = true;
          logPage = 1;
          logButton.setAttribute("aria-expanded", "true");
          log.hidden = false;
          await loadLog();
        }),
      );
      const rotate = confirmButton(
        "Rotate secret",
        "New signing secret? The old one keeps signing for 24 h.",
        async () => {
          const rotated = await api("POST", `/webhooks/${hook.id}/rotate-secret`);
          fill(
            cardSlot,
            secretBox("New signing secret", rotated.secret),
            h("p", { class: "muted" }, `Deliveries carry the previous secret's signature too until ${when(rotated.previous_secret_expires_at)}.`),
          );
          paint();
          cardSlot.querySelector("button")?.focus();
        },
        { slot: cardSlot, danger: false, small: false },
      );
      const remove = confirmButton(
        "Delete",
        "Delete this webhook and its delivery log?",
        async () => {
          await api("DELETE", `/webhooks/${hook.id}`);
          stopPolling();
          fill(created, notice(`Deleted the webhook for ${hook.url}.`));
          await load();
        },
        { slot: cardSlot, small: false },
      );
      fill(actions, toggle, test, rotate, logButton, remove);
    }

    log.setAttribute("aria-label", `Deliveries of ${hook.url}`);
    paint();
    return card;
  }

  async function load() {
    for (const t of timers) clearTimeout(t);
    timers.clear();
    try {
      const page = await api("GET", `/webhooks?page=${state.page}&page_size=20`);
      fill(
        list,
        page.items.length
          ? page.items.map((hook) => hookCard(hook))
          : h("p", { class: "empty" }, "No webhooks yet. Add one with New webhook."),
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
  return () => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
  };
}

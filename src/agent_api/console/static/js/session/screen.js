// The session screen: the header, the tabs and their panels, and the one place where the stored history and the
// live events meet, so the parts that show them never need to know which one an item came from.
import { api, authHeader } from "../api.js";
import { badge, count, fill, h, usd } from "../dom.js";
import { showError } from "../ui.js";
import { SessionActions } from "./actions.js";
import { Conversation } from "./conversation.js";
import { FilesPanel } from "./files.js";
import { PromptBox } from "./prompt.js";
import { EventFeed, readEvents } from "./stream.js";
import { setWorkdir } from "./tool-text.js";

const MODES = {
  default: "Ask before acting",
  acceptEdits: "Accept file edits",
  plan: "Plan only",
  bypassPermissions: "Never ask",
};

export class SessionView {
  constructor(main, session) {
    this.main = main;
    this.session = session;
    this.id = session.id;
    setWorkdir(session.id);
    this.closed = false;
    this.timers = [];
    this.conversation = new Conversation(this);
    this.files = new FilesPanel(this.id);
    this.feed = new EventFeed(this.id, {
      onFrame: (frame) => this.onFrame(frame),
      onState: (state) => this.setLive(state),
      onGone: (error) => this.gone(error),
    });
    this.buffer = []; // frames that arrive before the history is on the page
    this.historyLoaded = false;
    this.everConnected = false;
    this.connectedOnce = null;
  }

  async start() {
    this.build();
    this.update();
    const connected = new Promise((resolve) => {
      this.connectedOnce = resolve;
    });
    this.feed.start();
    // Subscribed first, then read: nothing committed in between is missed (duplicates are recognised by id).
    await Promise.race([connected, sleep(4000)]);
    if (this.closed) return;
    await this.loadHistory();
    this.historyLoaded = true;
    for (const frame of this.buffer.splice(0)) this.handle(frame);
    this.conversation.scrollToEnd();
    this.timers.push(setInterval(() => this.conversation.tick(), 1000));
    this.expiriesFromLog();
  }

  close() {
    this.closed = true;
    this.feed.close();
    for (const timer of this.timers) clearInterval(timer);
    for (const dialog of this.main.querySelectorAll("dialog[open]")) dialog.close();
  }

  // --- layout ------------------------------------------------------------------------------------------------

  build() {
    const s = this.session;
    this.title = h("h1", { class: "session-title" }, s.name || "Untitled session");
    this.badgeSlot = h("span", { class: "session-badge" });
    this.live = h("span", { class: "live", "data-state": "connecting", role: "status" }, "Connecting…");
    this.meta = h("p", { class: "session-meta" });
    this.slot = h("div", { class: "messages", "aria-live": "polite" });

    this.actions = new SessionActions(this);
    const head = h(
      "header",
      { class: "page-header session-header" },
      h(
        "div",
        { class: "session-heading" },
        h("div", { class: "session-title-row" }, this.title, this.badgeSlot, this.live),
        this.meta,
      ),
      this.actions.el,
    );

    this.tabConversation = h(
      "button",
      { type: "button", role: "tab", id: "tab-conversation", "aria-controls": "panel-conversation", "aria-selected": "true" },
      "Conversation",
    );
    this.waitingCount = h("span", { class: "tab-count", hidden: true });
    this.tabConversation.append(this.waitingCount);
    this.tabFiles = h(
      "button",
      { type: "button", role: "tab", id: "tab-files", "aria-controls": "panel-files", "aria-selected": "false", tabindex: "-1" },
      "Files",
    );
    const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Session views" }, this.tabConversation, this.tabFiles);
    tabs.addEventListener("click", (event) => {
      const tab = event.target.closest("[role=tab]");
      if (tab) this.select(tab === this.tabFiles ? "files" : "conversation");
    });
    tabs.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
      event.preventDefault();
      const next = this.tab === "files" ? "conversation" : "files";
      this.select(next);
      (next === "files" ? this.tabFiles : this.tabConversation).focus();
    });

    this.prompt = new PromptBox(this);
    this.working = h("div", { class: "working", role: "status", id: "session-working" });
    this.panelConversation = h(
      "section",
      { id: "panel-conversation", role: "tabpanel", "aria-labelledby": "tab-conversation", class: "conversation-panel" },
      this.conversation.el,
      this.working,
      this.prompt.el,
    );
    this.panelFiles = h(
      "section",
      { id: "panel-files", role: "tabpanel", "aria-labelledby": "tab-files", class: "files-panel", hidden: true },
      this.files.el,
    );
    this.tab = "conversation";
    fill(this.main, head, this.slot, tabs, this.panelConversation, this.panelFiles);
    this.main.classList.add("session-page");
  }

  select(tab) {
    this.tab = tab;
    const files = tab === "files";
    this.tabFiles.setAttribute("aria-selected", String(files));
    this.tabConversation.setAttribute("aria-selected", String(!files));
    this.tabFiles.tabIndex = files ? 0 : -1;
    this.tabConversation.tabIndex = files ? -1 : 0;
    this.panelFiles.hidden = !files;
    this.panelConversation.hidden = files;
    if (files) this.files.open();
  }

  setLive(state) {
    const text = { live: "Live", connecting: "Connecting…", offline: "Reconnecting…" }[state] || state;
    this.live.dataset.state = state;
    this.live.textContent = text;
  }

  /** The header, the actions and the prompt box for the session's current status and totals. */
  update() {
    const s = this.session;
    this.title.textContent = s.name || "Untitled session";
    fill(this.badgeSlot, badge(s.status));
    const tokens = `${count(s.total_input_tokens)} in · ${count(s.total_output_tokens)} out tokens`;
    fill(
      this.meta,
      h("span", {}, s.model || (s.sdk_options && s.sdk_options.model) || "default model"),
      h("span", {}, MODES[s.permission_mode] || s.permission_mode || ""),
      h("span", {}, `${s.turn_count} turn${s.turn_count === 1 ? "" : "s"}`),
      h("span", {}, tokens),
      h("span", {}, usd(s.total_cost_usd)),
      s.is_fork && s.parent_session_id ? h("a", { href: `#/sessions/${s.parent_session_id}` }, "forked from…") : null,
    );
    const status = s.status;
    this.actions.update(status);
    const working = {
      processing: "The agent is working…",
      waiting: "Waiting for your approval.",
      connecting: "Starting the agent…",
      paused: "Paused. Resume the session to continue.",
      archived: "Archived. Resume the session to continue.",
    }[status];
    this.working.textContent = working || "";
    this.working.dataset.state = status;
    this.prompt.update(status);
    document.title = `${s.name || "Session"} · agent-api`;
  }

  setStatus(status) {
    if (!status || status === this.session.status) return;
    this.session = { ...this.session, status };
    showError(this.prompt.slot, null); // a refusal ("paused", "busy") no longer applies
    this.update();
  }

  async reloadSession() {
    try {
      const latest = await api("GET", `/sessions/${this.id}`);
      if (this.closed) return;
      this.session = latest;
      this.update();
    } catch (error) {
      if (error.status === 404) this.gone(error);
    }
  }

  gone(error) {
    if (this.closed) return;
    showError(this.slot, error && error.status === 404 ? new Error("This session no longer exists.") : error);
    this.setLive("offline");
    this.live.textContent = "Disconnected";
    this.prompt.update("terminated");
  }

  async send(message) {
    const answer = await api("POST", `/sessions/${this.id}/query`, { message });
    if (answer && answer.status) this.setStatus(answer.status);
    return answer;
  }

  async decide(requestId, decision, remember) {
    const body = { decision };
    if (remember) body.remember = "session";
    return api("POST", `/sessions/${this.id}/permissions/${requestId}`, body);
  }

  // --- history and events ------------------------------------------------------------------------------------

  async loadHistory() {
    try {
      const [messages, toolCalls, permissions, snapshots] = await Promise.all([
        allPages(`/sessions/${this.id}/messages`),
        allPages(`/sessions/${this.id}/tool-calls`),
        allPages(`/sessions/${this.id}/permissions`),
        allPages(`/sessions/${this.id}/metrics/snapshots`).catch(() => []),
      ]);
      if (this.closed) return;
      this.conversation.history(messages, toolCalls, permissions, snapshots, this.session);
      this.conversation.empty.textContent = "No messages yet. Say what the agent should do.";
    } catch (error) {
      showError(this.slot, error);
      this.conversation.empty.textContent = "The conversation could not be loaded.";
    }
  }

  onFrame(frame) {
    if (this.closed) return;
    if (frame.type === "connected") {
      const first = !this.everConnected;
      this.everConnected = true;
      if (this.connectedOnce) this.connectedOnce();
      if (!first || this.historyLoaded) {
        // A reconnect, or a first connection after the history was read without it: read what may be missing.
        if (first) this.loadHistory();
        this.reloadSession();
      }
      this.latestSeq = frame.data && frame.data.latest_seq;
      frame.first = first;
    }
    if (!this.historyLoaded) {
      this.buffer.push(frame);
      return;
    }
    this.handle(frame);
  }

  handle(frame) {
    const data = frame.data || {};
    const c = this.conversation;
    switch (frame.type) {
      case "connected":
        this.setStatus(data.status);
        // The first `connected` may be older than the history read after it: it only adds, never removes.
        c.pending(data.pending_permission_requests || [], this.session, !frame.first);
        break;
      case "status_change":
        this.setStatus(data.status);
        break;
      case "message":
        c.message({ ...data, id: data.message_id, created_at: frame.ts });
        break;
      case "delta":
        c.delta(data);
        break;
      case "tool_call_started":
        c.toolStarted(data);
        break;
      case "tool_call_completed":
        c.toolCompleted(data);
        break;
      case "permission_request":
        c.approval({ ...data, created_at: frame.ts });
        break;
      case "permission_resolved":
        c.resolved(data);
        break;
      case "permission_decision":
        if (data.decision === "deny") c.note("deny", `${data.tool} denied (${data.decided_by}): ${data.reason || ""}`);
        break;
      case "result":
        c.result(data.turn_id, data, frame.ts);
        this.reloadSession();
        this.files.refresh();
        break;
      case "error":
        c.error(data, frame.seq);
        break;
      case "budget_warning":
      case "budget_exceeded":
        c.note(
          frame.type === "budget_warning" ? "warn" : "deny",
          `${frame.type === "budget_warning" ? "Budget warning" : "Budget exceeded"}: ${usd(data.current_month_cost_usd)} of ${usd(data.monthly_budget_usd)} used this month (${data.percent_used}%).`,
        );
        break;
      default:
        break;
    }
  }

  /** Pending requests listed without their expiry (after a reload): find their `permission_request` events. */
  async expiriesFromLog() {
    const missing = this.conversation.withoutExpiry();
    if (!missing.size || !this.latestSeq) return;
    const after = Math.max(0, this.latestSeq - 500);
    const controller = new AbortController();
    this.timers.push(setTimeout(() => controller.abort(), 10000));
    try {
      const response = await fetch(`/api/v1/sessions/${this.id}/events?after_seq=${after}`, {
        headers: { ...authHeader(), Accept: "text/event-stream" },
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) return;
      await readEvents(response.body, (frame) => {
        if (frame.type === "permission_request" && missing.has(frame.data.request_id)) {
          this.conversation.approval({ ...frame.data, created_at: frame.ts });
          missing.delete(frame.data.request_id);
        }
        if (!missing.size || (frame.seq != null && frame.seq >= this.latestSeq)) controller.abort();
      });
    } catch {
      // best effort: the card shows when it was asked instead
    } finally {
      controller.abort();
    }
  }
}

async function allPages(path) {
  const items = [];
  for (let page = 1; ; page += 1) {
    const answer = await api("GET", `${path}?page=${page}&page_size=100`);
    items.push(...answer.items);
    if (page >= answer.total_pages || !answer.items.length) return items;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

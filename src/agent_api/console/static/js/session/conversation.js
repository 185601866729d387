// The conversation is built from the stored history and then from the live stream, and both can carry the same
// message, tool call, approval or result: every item is keyed by its id so it is shown once.
import { clock, count, h, usd, when } from "../dom.js";
import { ApprovalCard } from "./approvals.js";
import { ToolCard } from "./tool-card.js";

/**
 * The conversation: a flat list of items (user messages, assistant text, thinking, tool cards, approval cards,
 * turn results, errors). Items are only ever added or updated in place, so streaming text never re-renders what is
 * above it; the page follows the end only when the reader was already there.
 */
export class Conversation {
  constructor(view) {
    this.view = view;
    this.el = h("div", { class: "conversation", role: "log", "aria-label": "Conversation" });
    this.empty = h("p", { class: "conversation-empty" }, "Loading the conversation…");
    this.el.append(this.empty);
    this.messages = new Set();
    this.tools = new Map(); // tool_use_id -> ToolCard
    this.approvals = new Map(); // request_id -> ApprovalCard
    this.resolvedIds = new Set();
    this.noted = new Set();
    this.results = new Set();
    this.errors = new Set();
    this.streaming = new Map(); // "turn:index" -> {kind, el, node, text}
  }

  // Scrolling: follow the end only when the reader is already there.
  atEnd() {
    const doc = document.documentElement;
    return window.innerHeight + window.scrollY >= doc.scrollHeight - 120;
  }

  scrollToEnd() {
    window.scrollTo(0, document.documentElement.scrollHeight);
  }

  change(fn) {
    const follow = !this.view.panelConversation.hidden && this.atEnd();
    const result = fn();
    this.empty.hidden = this.el.childElementCount > 1;
    if (follow) this.scrollToEnd();
    return result;
  }

  add(item, before = null) {
    this.el.insertBefore(item, before && before.parentNode === this.el ? before : null);
    return item;
  }

  /** The first item still streaming: final items for earlier blocks go before it. */
  streamingHead() {
    for (const part of this.streaming.values()) return part.el;
    return null;
  }

  history(messages, toolCalls, permissions, snapshots, session) {
    const calls = new Map(toolCalls.map((t) => [t.tool_use_id, t]));
    const costs = new Map(snapshots.filter((s) => s.turn_id).map((s) => [s.turn_id, s]));
    this.change(() => {
      let turn = null;
      for (const m of messages) {
        if (turn && m.turn_id !== turn && costs.has(turn)) this.resultFromSnapshot(costs.get(turn));
        turn = m.turn_id;
        this.renderMessage(m, calls);
      }
      if (turn && costs.has(turn)) this.resultFromSnapshot(costs.get(turn));
      for (const p of permissions) {
        if (p.decision === null) {
          this.approval({ request_id: p.id, tool: p.tool_name, input: p.input_summary, tool_use_id: p.tool_use_id, created_at: p.created_at }, session);
        } else if ((p.decided_by === "user" || p.decision === "deny") && !this.noted.has(p.id)) {
          this.noted.add(p.id);
          this.decisionNote(p.tool_use_id, p.decision, p.decided_by, p.tool_name, p.reason);
        }
      }
    });
  }

  resultFromSnapshot(s) {
    if (this.results.has(s.turn_id)) return;
    this.results.add(s.turn_id);
    const usage = { input_tokens: s.input_tokens, output_tokens: s.output_tokens };
    this.add(resultLine({ cost_usd: s.cost_usd, usage, duration_ms: s.duration_ms }, s.created_at));
  }

  message(m) {
    this.change(() => this.renderMessage(m, new Map()));
  }

  renderMessage(m, calls) {
    if (this.messages.has(m.id)) return;
    this.messages.add(m.id);
    const blocks = Array.isArray(m.content) ? m.content : [];
    if (m.role === "assistant") {
      for (const block of blocks) this.assistantBlock(block, m.turn_id, calls);
      return;
    }
    // A user message: what a person wrote, or tool results (shown on their cards).
    const texts = blocks.filter((b) => b && b.type === "text" && b.text).map((b) => b.text);
    for (const block of blocks) {
      if (block && block.type === "tool_result" && this.tools.has(block.tool_use_id)) {
        this.tools.get(block.tool_use_id).resultBlock(block);
      }
    }
    if (!texts.length && m.text && !blocks.length) texts.push(m.text);
    if (!texts.length) return;
    if (texts.every((t) => /^\[Request interrupted/.test(t))) {
      // The agent CLI's own marker, not something a person wrote.
      this.add(note("warn", texts.join(" ").replace(/^\[|\]$/g, "")));
      return;
    }
    this.add(
      h(
        "div",
        { class: "msg msg-user" },
        h("div", { class: "msg-who" }, "You", m.created_at ? h("time", { datetime: m.created_at, title: when(m.created_at) }, clock(m.created_at)) : null),
        h("div", { class: "msg-text" }, texts.join("\n")),
      ),
    );
  }

  assistantBlock(block, turnId, calls) {
    if (!block || typeof block !== "object") return;
    if (block.type === "text" || block.type === "thinking") {
      const kind = block.type;
      const text = kind === "text" ? block.text : block.thinking;
      if (!text) return;
      const part = this.adopt(turnId, kind, text);
      if (part) {
        part.node.data = text;
        part.el.classList.remove("is-streaming");
        return;
      }
      this.add(kind === "text" ? assistantText(text).el : thinking(text).el, this.streamingHead());
    } else if (block.type === "tool_use") {
      const card = this.card(block.id, block.name, block.input, this.streamingHead());
      const call = calls.get(block.id);
      if (call) card.fromHistory(call);
    }
  }

  /** The streamed part (of this turn and kind) a final block takes over, if any. */
  adopt(turnId, kind, text) {
    let fallback = null;
    for (const [key, part] of this.streaming) {
      if (part.turn !== turnId || part.kind !== kind) continue;
      if (part.node.data === text) {
        this.streaming.delete(key);
        return part;
      }
      if (!fallback) fallback = [key, part];
    }
    if (fallback) {
      this.streaming.delete(fallback[0]);
      return fallback[1];
    }
    return null;
  }

  delta(d) {
    const kind = d.kind === "text_delta" ? "text" : d.kind === "thinking_delta" ? "thinking" : null;
    if (!kind || !d.text) return;
    const key = `${d.turn_id}:${d.index}`;
    this.change(() => {
      let part = this.streaming.get(key);
      if (!part) {
        const made = kind === "text" ? assistantText("") : thinking("");
        made.el.classList.add("is-streaming");
        part = { turn: d.turn_id, kind, el: made.el, node: made.node };
        this.streaming.set(key, part);
        this.add(made.el);
      }
      part.node.appendData(d.text); // appended, never re-rendered
    });
  }

  card(toolUseId, name, input, before = null) {
    let card = this.tools.get(toolUseId);
    if (!card) {
      card = new ToolCard(name, input);
      this.tools.set(toolUseId, card);
      this.add(card.el, before);
    }
    return card;
  }

  toolStarted(d) {
    this.change(() => this.card(d.tool_use_id, d.name, d.input));
  }

  toolCompleted(d) {
    this.change(() => this.card(d.tool_use_id, d.name, {}).completed(d));
  }

  approval(request, session = this.view.session) {
    const id = request.request_id;
    if (this.resolvedIds.has(id)) return;
    const known = this.approvals.get(id);
    if (known) {
      known.learn(request);
      return;
    }
    let expires = request.expires_at;
    if (!expires && session && session.permission_timeout_s && request.created_at) {
      expires = new Date(new Date(request.created_at).getTime() + session.permission_timeout_s * 1000).toISOString();
    }
    const card = new ApprovalCard({ ...request, expires_at: expires }, (decision, remember) => this.view.decide(id, decision, remember), (answer) => this.resolved(answer));
    this.approvals.set(id, card);
    this.change(() => {
      const tool = request.tool_use_id && this.tools.get(request.tool_use_id);
      if (tool) tool.awaiting(true);
      this.add(card.el, tool ? tool.el.nextSibling : null);
    });
    this.countWaiting();
  }

  /** `connected`'s list of pending requests: add the new, drop those decided meanwhile. */
  pending(list, session, reconcile) {
    const open = new Set(list.map((r) => r.request_id));
    for (const id of [...this.approvals.keys()]) {
      if (reconcile && !open.has(id)) this.resolved({ request_id: id, decision: null });
    }
    for (const request of list) this.approval(request, session);
  }

  resolved(data) {
    const id = String(data.request_id);
    this.resolvedIds.add(id);
    const card = this.approvals.get(id);
    if (!card) return;
    this.approvals.delete(id);
    const tool = card.toolUseId && this.tools.get(card.toolUseId);
    if (tool) tool.awaiting(false);
    this.change(() => {
      if (data.decision) {
        const rule = data.remembered_rule ? ` · remembered for this session: ${data.remembered_rule}` : "";
        const by = data.decided_by && data.decided_by !== "user" ? ` (${data.decided_by})` : "";
        card.el.replaceWith(note(data.decision === "allow" ? "allow" : "deny", `${card.tool} ${data.decision === "allow" ? "allowed" : "denied"}${by}${rule}`));
      } else {
        card.el.remove();
      }
    });
    this.countWaiting();
  }

  decisionNote(toolUseId, decision, decidedBy, tool, reason) {
    const text = `${tool} ${decision === "allow" ? "allowed" : "denied"}${decidedBy === "user" ? "" : ` (${decidedBy})`}${decision === "deny" && reason ? `: ${reason}` : ""}`;
    const card = toolUseId && this.tools.get(toolUseId);
    this.add(note(decision === "allow" ? "allow" : "deny", text), card ? card.el.nextSibling : null);
  }

  withoutExpiry() {
    return new Set([...this.approvals].filter(([, card]) => !card.expiresAt).map(([id]) => id));
  }

  countWaiting() {
    const n = this.approvals.size;
    this.view.waitingCount.hidden = n === 0;
    this.view.waitingCount.textContent = n ? `${n} to approve` : "";
  }

  tick() {
    for (const card of this.approvals.values()) card.tick();
  }

  result(turnId, data, ts) {
    if (turnId && this.results.has(turnId)) return;
    if (turnId) this.results.add(turnId);
    this.change(() => {
      for (const [key, part] of this.streaming) {
        if (part.turn === turnId) {
          part.el.classList.remove("is-streaming");
          this.streaming.delete(key);
        }
      }
      this.add(resultLine(data, ts));
    });
  }

  error(data, seq) {
    if (seq != null) {
      if (this.errors.has(seq)) return;
      this.errors.add(seq);
    }
    this.change(() => this.add(h("div", { class: "error", role: "alert" }, data.message || data.code || "Error", data.code ? h("small", {}, ` (${data.code})`) : null)));
  }

  note(kind, text) {
    this.change(() => this.add(note(kind, text)));
  }
}

function assistantText(text) {
  const node = document.createTextNode(text);
  const el = h("div", { class: "msg msg-assistant" }, h("div", { class: "msg-text" }, node));
  return { el, node };
}

function thinking(text) {
  const node = document.createTextNode(text);
  const el = h("details", { class: "thinking" }, h("summary", {}, "Thinking"), h("pre", {}, node));
  return { el, node };
}

function note(kind, text) {
  return h("p", { class: `note note-${kind}` }, text);
}

function resultLine(data, ts) {
  const usage = data.usage || {};
  const input = Number(usage.input_tokens || 0) + Number(usage.cache_read_input_tokens || 0) + Number(usage.cache_creation_input_tokens || 0);
  const status = data.turn_status || (data.is_error ? "failed" : null);
  const failed = data.is_error || (status && status !== "completed");
  const parts = [
    status ? `Turn ${status}` : "Turn",
    `${data.cost_estimated ? "≈ " : ""}${usd(data.cost_usd)}`,
    `${count(input)} in · ${count(usage.output_tokens)} out tokens`,
    data.duration_ms != null ? `${(Number(data.duration_ms) / 1000).toFixed(1)} s` : null,
  ].filter(Boolean);
  return h(
    "p",
    { class: `turn-result${failed ? " is-error" : ""}` },
    parts.join(" · "),
    ts ? h("time", { datetime: ts, title: when(ts) }, ` · ${clock(ts)}`) : null,
  );
}

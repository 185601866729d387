// The card that asks a person to allow or deny a tool call, with when the request runs out and what happens then.
import { clock, h, when } from "../dom.js";
import { busy } from "../ui.js";
import { pretty, relative } from "./tool-text.js";

export class ApprovalCard {
  constructor(request, decide, done) {
    this.tool = request.tool || "A tool";
    this.toolUseId = request.tool_use_id || null;
    this.expiresAt = request.expires_at || null;
    this.onTimeout = request.on_timeout || null;
    this.createdAt = request.created_at || null;
    this.slot = h("div", { class: "messages" });
    this.expiry = h("span", { class: "approval-expiry" });
    const input = request.input || {};
    const buttons = [
      ["Allow", "allow", false, "primary"],
      ["Deny", "deny", false, "danger"],
      ["Allow and remember for this session", "allow", true, ""],
    ].map(([label, decision, remember, cls]) => {
      const button = h("button", { type: "button", class: cls || null }, label);
      button.addEventListener("click", () =>
        busy(button, this.slot, async () => {
          for (const b of this.buttons) b.disabled = true;
          try {
            const answer = await decide(decision, remember);
            done({ request_id: request.request_id, decision: answer.decision, decided_by: "user", remembered_rule: answer.remembered_rule });
          } catch (error) {
            if (error.status === 409) {
              done({ request_id: request.request_id, decision: null });
              return;
            }
            for (const b of this.buttons) b.disabled = false;
            throw error;
          }
        }),
      );
      return button;
    });
    this.buttons = buttons;
    this.el = h(
      "section",
      { class: "approval-card", role: "group", "aria-label": `Approve ${this.tool}` },
      h("div", { class: "approval-head" }, h("strong", {}, `${this.tool} needs your approval`), this.expiry),
      h("div", { class: "approval-summary" }, inputLines(input)),
      Object.keys(input).length ? h("details", { class: "tool-input" }, h("summary", {}, "Full input"), h("pre", {}, pretty(input))) : null,
      this.slot,
      h("div", { class: "approval-actions" }, buttons),
    );
    this.tick();
  }

  learn(request) {
    if (request.expires_at && !this.expiresAt) {
      this.expiresAt = request.expires_at;
      this.onTimeout = request.on_timeout || this.onTimeout;
      this.tick();
    }
  }

  tick() {
    if (!this.expiresAt) {
      this.expiry.textContent = this.createdAt ? `asked at ${clock(this.createdAt)}` : "";
      return;
    }
    const left = Math.round((new Date(this.expiresAt).getTime() - Date.now()) / 1000);
    const then = this.onTimeout === "allow" ? "allowed" : "denied";
    if (left <= 0) {
      this.expiry.textContent = `expired at ${clock(this.expiresAt)}`;
    } else {
      const span = left >= 120 ? `${Math.floor(left / 60)} min` : `${left} s`;
      this.expiry.textContent = `expires at ${clock(this.expiresAt)} (in ${span}), then ${then}`;
    }
    this.expiry.title = when(this.expiresAt);
  }
}

/** The input's fields as short "name: value" lines, for an approval card. */
function inputLines(input) {
  const lines = [];
  for (const [key, value] of Object.entries(input || {})) {
    if (key === "description" && input.command) continue;
    let text = typeof value === "string" ? relative(value) : pretty(value);
    if (text.length > 240) text = `${text.slice(0, 240)}…`;
    lines.push(h("div", { class: "approval-field" }, h("span", { class: "approval-key" }, `${key}: `), h("code", {}, text)));
    if (lines.length >= 4) break;
  }
  return lines;
}

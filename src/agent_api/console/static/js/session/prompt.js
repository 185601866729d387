// The message box under the conversation. It is disabled while a turn runs (the API refuses a second one) and gives
// the focus back when the turn ends, so a keyboard user can keep typing.
import { h } from "../dom.js";
import { showError } from "../ui.js";
import { BUSY } from "./actions.js";

export class PromptBox {
  constructor(view) {
    this.view = view;
    this.slot = h("div", { class: "messages" });
    this.input = h("textarea", {
      name: "message",
      rows: 2,
      id: "prompt",
      placeholder: "Message the agent (Enter sends, Shift+Enter for a new line)",
      "aria-describedby": "session-working",
    });
    this.send = h("button", { type: "submit", class: "primary" }, "Send");
    this.stop = h("button", { type: "button", hidden: true }, "Interrupt");
    this.stop.addEventListener("click", () => view.actions.interrupt(this.stop));
    this.el = h(
      "form",
      { class: "prompt", "aria-label": "Send a message" },
      this.slot,
      h("label", { for: "prompt", class: "visually-hidden" }, "Message"),
      h("div", { class: "prompt-row" }, this.input, h("div", { class: "prompt-buttons" }, this.send, this.stop)),
    );
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.el.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.sending = false;
  }

  update(status) {
    this.busy = BUSY.has(status);
    const ended = status === "terminated";
    this.send.disabled = this.busy || this.sending || ended;
    this.input.disabled = this.busy || ended;
    this.stop.hidden = !this.busy;
    if (!this.busy && this.hadFocus) {
      this.hadFocus = false;
      this.input.focus();
    }
  }

  async submit() {
    const message = this.input.value;
    if (!message.trim() || this.busy || this.sending) return;
    this.sending = true;
    this.hadFocus = document.activeElement === this.input;
    this.send.disabled = true;
    showError(this.slot, null);
    try {
      await this.view.send(message);
      this.input.value = "";
    } catch (error) {
      showError(this.slot, error);
    } finally {
      this.sending = false;
      this.update(this.view.session.status);
    }
  }
}

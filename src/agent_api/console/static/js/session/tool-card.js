// A tool call on the conversation: its input folded under a one-line summary, then its status and output. The card
// is created when the call starts and updated in place, so a finishing call never moves what is below it.
import { fill, folded, h } from "../dom.js";
import { outputText, pretty, toolSummary } from "./tool-text.js";

export class ToolCard {
  constructor(name, input) {
    this.name = name || "Tool";
    this.input = input || {};
    this.state = h("span", { class: "badge status-running" }, "running");
    this.duration = h("span", { class: "tool-duration" });
    this.summary = h("code", { class: "tool-summary" }, toolSummary(this.name, this.input));
    this.inputText = h("pre", { class: "tool-input-json", "aria-label": "Input" }, pretty(this.input));
    // The head opens the full input.
    const head = h(
      "summary",
      { class: "tool-head", title: "Show the full input" },
      h("span", { class: "tool-name" }, this.name),
      this.summary,
      h("span", { class: "tool-status" }, this.state, this.duration),
    );
    this.output = h("div", { class: "tool-output" });
    this.el = h(
      "article",
      { class: "tool-card is-running", "aria-label": `Tool call ${this.name}` },
      h("details", { class: "tool-input" }, head, this.inputText),
      this.output,
    );
    this.done = false;
  }

  /** While a person must decide about this call. */
  awaiting(flag) {
    if (this.done) return;
    this.state.className = `badge status-${flag ? "waiting" : "running"}`;
    this.state.textContent = flag ? "awaiting approval" : "running";
  }

  setInput(input) {
    if (!input || !Object.keys(input).length) return;
    this.input = input;
    this.summary.textContent = toolSummary(this.name, input);
    this.inputText.textContent = pretty(input);
  }

  finish(isError, status, output, durationMs) {
    this.done = true;
    this.el.classList.remove("is-running");
    this.el.classList.toggle("is-error", Boolean(isError));
    const label = isError ? "error" : status === "started" ? "running" : "done";
    this.state.className = `badge status-${isError ? "failed" : status === "started" ? "running" : "completed"}`;
    this.state.textContent = label;
    this.duration.textContent = durationMs != null ? ` ${durationMs} ms` : "";
    if (output !== undefined) {
      const text = outputText(output);
      fill(this.output, text ? folded(text) : h("p", { class: "muted no-output" }, "(no output)"));
      this.output.setAttribute("aria-label", isError ? "Error" : "Output");
    }
  }

  fromHistory(call) {
    this.setInput(call.input);
    if (call.status === "started") return;
    this.finish(call.is_error, call.status, call.output, call.duration_ms);
  }

  resultBlock(block) {
    if (this.done) return;
    this.finish(block.is_error, "completed", block.content, null);
  }

  completed(d) {
    this.finish(d.is_error, "completed", d.output, d.duration_ms);
  }
}

// The header's actions on the whole session (interrupt, pause, resume, fork, archive, delete) and their dialogs.
// Only the actions the current status allows are shown, so a person is never offered a button the API would refuse.
import { api } from "../api.js";
import { bytes, field, fill, h } from "../dom.js";
import { busy, notice, showError } from "../ui.js";

// A turn is running in these: a new message or an archive would be refused.
export const BUSY = new Set(["processing", "waiting"]);
const PAUSABLE = new Set(["created", "connecting", "processing", "waiting", "active", "failed"]);
const RESUMABLE = new Set(["paused", "completed", "archived"]);

export class SessionActions {
  constructor(view) {
    this.view = view;
    this.buttons = {
      interrupt: h("button", { type: "button", class: "header-interrupt", onclick: (e) => this.interrupt(e.currentTarget) }, "Interrupt"),
      pause: h("button", { type: "button", onclick: (e) => this.act(e.currentTarget, "pause") }, "Pause"),
      resume: h("button", { type: "button", onclick: (e) => this.act(e.currentTarget, "resume") }, "Resume"),
      fork: h("button", { type: "button", onclick: () => this.openFork() }, "Fork"),
      archive: h("button", { type: "button", onclick: (e) => this.archive(e.currentTarget) }, "Archive"),
      remove: h("button", { type: "button", class: "danger", onclick: () => this.openDelete() }, "Delete"),
    };
    this.el = h("div", { class: "actions" }, Object.values(this.buttons));
  }

  update(status) {
    const b = this.buttons;
    b.interrupt.hidden = !BUSY.has(status);
    b.pause.hidden = !PAUSABLE.has(status);
    b.resume.hidden = !RESUMABLE.has(status);
    b.archive.hidden = status === "archived" || status === "terminated";
    b.archive.disabled = BUSY.has(status);
  }

  interrupt(button) {
    return busy(button, this.view.slot, async () => {
      const answer = await api("POST", `/sessions/${this.view.id}/interrupt`);
      if (answer && answer.interrupted === false) fill(this.view.slot, notice("No turn was running."));
    });
  }

  act(button, action) {
    showError(this.view.prompt.slot, null); // a refusal ("paused", "busy") no longer applies
    return busy(button, this.view.slot, async () => {
      const body = action === "resume" ? {} : undefined;
      this.view.session = await api("POST", `/sessions/${this.view.id}/${action}`, body);
      this.view.update();
    });
  }

  archive(button) {
    return busy(button, this.view.slot, async () => {
      const record = await api("POST", `/sessions/${this.view.id}/archive`);
      fill(this.view.slot, notice(`Archived: ${record.file_count} files, ${bytes(record.size_bytes)}. Resume restores it.`));
      await this.view.reloadSession();
    });
  }

  openFork() {
    const name = h("input", { name: "name", maxlength: 200, value: `${this.view.session.name || "Session"} (fork)` });
    const files = h("input", { type: "checkbox", name: "include_working_directory", checked: true });
    const slot = h("div", { class: "messages" });
    const submit = h("button", { type: "submit", class: "primary" }, "Fork");
    const dialog = h("dialog", { class: "session-dialog", "aria-labelledby": "fork-title" });
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", { id: "fork-title" }, "Fork this session"),
      h("p", { class: "muted" }, "A new session with this conversation so far."),
      slot,
      field("Name of the fork", name),
      h("label", { class: "check" }, files, " Copy the working directory too"),
      h(
        "div",
        { class: "form-actions" },
        submit,
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(submit, slot, async () => {
        const body = { include_working_directory: files.checked };
        if (name.value.trim()) body.name = name.value.trim();
        const fork = await api("POST", `/sessions/${this.view.id}/fork`, body);
        dialog.close();
        location.hash = `#/sessions/${fork.id}`;
      });
    });
    this.showDialog(dialog, form, name);
  }

  openDelete() {
    const slot = h("div", { class: "messages" });
    const confirm = h("button", { type: "submit", class: "danger" }, "Delete");
    const cancel = h("button", { type: "button" }, "Cancel");
    const dialog = h("dialog", { class: "session-dialog", "aria-labelledby": "delete-title" });
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", { id: "delete-title" }, "Delete this session?"),
      h(
        "p",
        {},
        `“${this.view.session.name || "Untitled session"}” stops, and its working directory is removed. This cannot be undone.`,
      ),
      slot,
      h(
        "div",
        { class: "form-actions" },
        confirm,
        cancel,
      ),
    );
    cancel.addEventListener("click", () => dialog.close());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(confirm, slot, async () => {
        await api("DELETE", `/sessions/${this.view.id}`);
        dialog.close();
        location.hash = "#/sessions";
      });
    });
    this.showDialog(dialog, form, cancel); // not the destructive button: Enter must not delete
  }

  showDialog(dialog, form, focus) {
    dialog.append(form);
    dialog.addEventListener("close", () => dialog.remove());
    this.view.main.append(dialog);
    dialog.showModal();
    focus.focus();
  }
}

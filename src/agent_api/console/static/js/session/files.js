// The Files tab: the session's working directory as a tree that opens folder by folder (listed only when opened, and
// re-listed after each turn with the same folders open), a viewer for text files, and downloads.
import { api, call, ticketUrl } from "../api.js";
import { bytes, clear, fill, h, when } from "../dom.js";
import { busy, errorBox, showError } from "../ui.js";

export class FilesPanel {
  constructor(sessionId) {
    this.id = sessionId;
    this.loaded = false;
    this.expanded = new Set();
    this.slot = h("div", { class: "messages" });
    this.tree = h("ul", { class: "file-tree", "aria-label": "Working directory" });
    this.viewer = h("div", { class: "file-viewer" }, h("p", { class: "muted" }, "Choose a file to see its contents."));
    const all = h("button", { type: "button" }, "Download all (.tar.gz)");
    all.addEventListener("click", () => busy(all, this.slot, () => download(`/sessions/${this.id}/workdir/download`, "")));
    const reload = h("button", { type: "button" }, "Refresh");
    reload.addEventListener("click", () => busy(reload, this.slot, () => this.refresh(true)));
    this.el = h(
      "div",
      { class: "files" },
      h("div", { class: "files-bar" }, h("h2", {}, "Working directory"), h("div", { class: "actions" }, reload, all)),
      this.slot,
      h("div", { class: "files-body" }, h("div", { class: "file-tree-wrap" }, this.tree), this.viewer),
    );
  }

  open() {
    if (!this.loaded) this.refresh(true);
  }

  async refresh(force = false) {
    if (!this.loaded && !force) return;
    this.loaded = true;
    try {
      const items = await this.list("", 0);
      fill(this.tree, items);
      showError(this.slot, null);
    } catch (error) {
      showError(this.slot, error);
    }
  }

  async list(path, depth) {
    const listing = await api("GET", `/sessions/${this.id}/files?path=${encodeURIComponent(path)}`);
    if (!listing.entries.length && depth === 0) return [h("li", { class: "muted file-empty" }, "The working directory is empty.")];
    const items = [];
    for (const entry of listing.entries) items.push(await this.item(entry, depth));
    if (listing.truncated) items.push(h("li", { class: "muted" }, "More entries not shown."));
    return items;
  }

  async item(entry, depth) {
    const meta = h("span", { class: "file-meta", title: `Modified ${when(entry.modified_at)}` }, entry.type === "file" ? bytes(entry.size) : "link");
    if (entry.type === "dir") {
      const children = h("ul", { class: "file-tree", role: "group" });
      const button = h("button", { type: "button", class: "file-entry is-dir", "aria-expanded": "false" }, h("span", { class: "file-name" }, `${entry.name}/`));
      const li = h("li", {}, button, children);
      const expand = async (open) => {
        button.setAttribute("aria-expanded", String(open));
        if (!open) {
          this.expanded.delete(entry.path);
          clear(children);
          return;
        }
        this.expanded.add(entry.path);
        fill(children, h("li", { class: "muted" }, "Loading…"));
        try {
          fill(children, await this.list(entry.path, depth + 1));
        } catch (error) {
          fill(children, h("li", {}, errorBox(error)));
        }
      };
      button.addEventListener("click", () => expand(button.getAttribute("aria-expanded") !== "true"));
      if (this.expanded.has(entry.path)) await expand(true);
      return li;
    }
    if (entry.type === "symlink") {
      return h("li", {}, h("span", { class: "file-entry is-link" }, h("span", { class: "file-name" }, `${entry.name} →`), meta));
    }
    const button = h("button", { type: "button", class: "file-entry" }, h("span", { class: "file-name" }, entry.name), meta);
    button.addEventListener("click", () => this.show(entry, button));
    return h("li", {}, button);
  }

  async show(entry, button) {
    for (const el of this.tree.querySelectorAll(".file-entry[aria-current]")) el.removeAttribute("aria-current");
    button.setAttribute("aria-current", "true");
    const path = `/sessions/${this.id}/files/content?path=${encodeURIComponent(entry.path)}`;
    const slot = h("div", { class: "messages" });
    const save = h("button", { type: "button", class: "small" }, "Download");
    save.addEventListener("click", () => busy(save, slot, () => download(path, entry.name)));
    const head = h("div", { class: "file-viewer-head" }, h("h3", {}, entry.path), h("span", { class: "muted" }, bytes(entry.size)), save);
    fill(this.viewer, head, slot, h("p", { class: "muted" }, "Loading…"));
    try {
      const response = await call("GET", path);
      const type = response.headers.get("content-type") || "";
      if (type.startsWith("text/")) {
        const text = await response.text();
        fill(this.viewer, head, slot, h("pre", { class: "file-content", tabindex: "0", "aria-label": `Contents of ${entry.path}` }, text));
      } else {
        await response.body?.cancel();
        fill(this.viewer, head, slot, h("p", {}, "A binary file: download it to open it."));
      }
    } catch (error) {
      fill(this.viewer, head, slot, errorBox(error), error.status === 413 ? h("p", { class: "muted" }, "Download it to see all of it.") : null);
    }
  }
}

/** A browser download through a single-use ticket URL (never the bearer token in a URL). */
async function download(path, name) {
  const url = await ticketUrl(path);
  const link = h("a", { href: url, download: name || "", class: "visually-hidden" });
  document.body.append(link);
  link.click();
  link.remove();
}

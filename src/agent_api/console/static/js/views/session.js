// One session: its header (status, model, actions), the conversation as it streams (messages, thinking, tool-call
// cards, approval cards, per-turn cost), a prompt box, and the Files panel (the working directory as a tree). The
// parts live in ../session/; this module only loads the session and hands the page to them.
import { api } from "../api.js";
import { fill, h } from "../dom.js";
import { errorBox } from "../ui.js";
import { SessionView } from "../session/screen.js";

export async function render(main, params) {
  fill(main, h("p", { class: "loading" }, "Loading the session…"));
  let session;
  try {
    session = await api("GET", `/sessions/${params.id}`);
  } catch (error) {
    const missing = error && error.status === 404;
    fill(
      main,
      h("header", { class: "page-header" }, h("h1", {}, missing ? "Session not found" : "Session")),
      errorBox(missing ? new Error("This session does not exist, or it is not yours.") : error),
      h("p", {}, h("a", { href: "#/sessions" }, "← All sessions")),
    );
    return undefined;
  }
  const view = new SessionView(main, session);
  await view.start();
  return () => view.close();
}

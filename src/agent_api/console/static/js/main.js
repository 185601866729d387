// The console's shell: sign-in state, navigation and the hash routes (#/sessions, #/sessions/<id>, ...).
import { onAuthChange, resume, signOut, user } from "./api.js";
import { h, fill } from "./dom.js";
import { errorBox } from "./ui.js";

// Route patterns to view modules, loaded when first opened. Each module exports `render(main, params)` and may
// return a cleanup function (closing a stream, say) called when the page changes.
const ROUTES = [
  [/^\/sessions\/([0-9a-f-]{36})$/, "session", ["id"]],
  [/^\/sessions$/, "sessions", []],
  [/^\/templates$/, "templates", []],
  [/^\/tasks\/([0-9a-f-]{36})$/, "task", ["id"]],
  [/^\/tasks$/, "tasks", []],
  [/^\/mcp$/, "mcp", []],
  [/^\/webhooks$/, "webhooks", []],
  [/^\/keys$/, "keys", []],
  [/^\/costs$/, "costs", []],
  [/^\/admin$/, "admin", []],
];
const NAV = [
  ["#/sessions", "Sessions"],
  ["#/templates", "Templates"],
  ["#/tasks", "Tasks"],
  ["#/mcp", "MCP servers"],
  ["#/webhooks", "Webhooks"],
  ["#/keys", "API keys"],
  ["#/costs", "Costs"],
];

const app = document.getElementById("app");
let cleanup = null;
let rendering = 0;

function route() {
  const path = (location.hash || "#/sessions").slice(1) || "/sessions";
  for (const [pattern, view, names] of ROUTES) {
    const match = pattern.exec(path);
    if (match) return { view, params: Object.fromEntries(names.map((name, i) => [name, match[i + 1]])) };
  }
  return { view: "sessions", params: {} };
}

function shell(current) {
  const me = user();
  const links = me.role === "admin" ? [...NAV, ["#/admin", "Admin"]] : NAV;
  const nav = h(
    "nav",
    { class: "nav", "aria-label": "Main" },
    links.map(([href, text]) =>
      h("a", { href, "aria-current": current === href.slice(2).split("/")[0] ? "page" : null }, text),
    ),
  );
  const out = h("button", { type: "button", class: "link", onclick: () => signOut() }, "Sign out");
  const top = h(
    "div",
    { class: "topbar" },
    h("a", { class: "brand", href: "#/sessions" }, "agent-api"),
    nav,
    h("div", { class: "me" }, h("span", { class: "who" }, me.username), out),
  );
  const main = h("main", { id: "main", tabindex: "-1" });
  fill(app, top, main);
  return main;
}

async function render() {
  const ticket = ++rendering;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // a view that fails to clean up must not stop the next one
    }
    cleanup = null;
  }
  if (!user()) {
    const login = await import("./views/login.js");
    if (ticket === rendering) login.render(app);
    return;
  }
  const { view, params } = route();
  const main = shell(view === "session" ? "sessions" : view === "task" ? "tasks" : view);
  try {
    const module = await import(`./views/${view}.js`);
    if (ticket !== rendering) return;
    const result = await module.render(main, params);
    if (ticket !== rendering) {
      if (typeof result === "function") result();
      return;
    }
    cleanup = typeof result === "function" ? result : null;
  } catch (error) {
    if (ticket === rendering) fill(main, errorBox(error));
  }
}

onAuthChange(() => render());
window.addEventListener("hashchange", () => render());

resume().then((me) => {
  if (!me) render();
});

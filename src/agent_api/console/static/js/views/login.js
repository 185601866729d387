// Sign in. A failure says only that the name or password is wrong, whichever it was.
import { signIn } from "../api.js";
import { h, fill } from "../dom.js";
import { busy } from "../ui.js";

export function render(root) {
  const slot = h("div", { class: "messages" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "login card", "aria-label": "Sign in" },
    h("h1", {}, "agent-api"),
    h("p", { class: "muted" }, "Sign in to run and watch your agents."),
    slot,
    h("label", { class: "field" }, h("span", { class: "field-label" }, "Username or email"),
      h("input", { name: "username", autocomplete: "username", required: true, autofocus: true })),
    h("label", { class: "field" }, h("span", { class: "field-label" }, "Password"),
      h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    submit,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    busy(submit, slot, () => signIn(String(data.get("username")), String(data.get("password"))));
  });
  fill(root, h("div", { class: "login-page" }, form));
  form.querySelector("input").focus();
}

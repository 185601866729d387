// Tool inputs and outputs as short, readable text, shared by the tool cards and the approval cards.

// Working directories are named after their session, so "/<session id>/" in a path marks where the workdir begins.
let workdirMarker = null;

export function setWorkdir(sessionId) {
  workdirMarker = `/${sessionId}/`;
}

/** A path inside the session's working directory, shown relative to it (the full path stays in the input). */
export function relative(text) {
  if (!workdirMarker || !text.startsWith("/")) return text;
  const at = text.indexOf(workdirMarker);
  return at < 0 ? text : text.slice(at + workdirMarker.length) || ".";
}

export function toolSummary(name, input) {
  if (!input || typeof input !== "object") return "";
  const pick = input.command ?? input.file_path ?? input.path ?? input.url ?? input.pattern ?? input.query ?? input.notebook_path;
  const value = pick !== undefined ? pick : Object.values(input).find((v) => typeof v === "string");
  const text = value === undefined ? "" : relative(String(value));
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

export function pretty(value) {
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

export function outputText(output) {
  if (output === null || output === undefined) return "";
  if (typeof output === "string") return output;
  if (Array.isArray(output)) {
    return output.map((b) => (b && typeof b === "object" ? (typeof b.text === "string" ? b.text : pretty(b)) : String(b))).join("\n");
  }
  if (typeof output === "object") {
    if (typeof output.stdout === "string" || typeof output.stderr === "string") {
      return [output.stdout, output.stderr].filter(Boolean).join("\n");
    }
    return pretty(output);
  }
  return String(output);
}

// The session's event stream. It is read with fetch rather than EventSource so the Authorization header goes along
// (no ticket in a URL) and so a reconnect can say where to resume from.
import { api, authHeader, refresh } from "../api.js";

/**
 * The session's event stream, read with fetch: the Authorization header goes along (a 401 refreshes the token and
 * tries again), and after a network error it reconnects with backoff from the last seq seen (`Last-Event-ID` and
 * `?after_seq=`), so the replay fills the gap. Stored frames it has already seen are dropped.
 */
export class EventFeed {
  constructor(sessionId, { onFrame, onState, onGone }) {
    this.sessionId = sessionId;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onGone = onGone;
    this.lastSeq = null;
    this.closed = false;
    this.controller = null;
    this.wake = null;
    this.online = () => this.wake && this.wake();
  }

  start() {
    window.addEventListener("online", this.online);
    this.run();
  }

  close() {
    this.closed = true;
    window.removeEventListener("online", this.online);
    if (this.controller) this.controller.abort();
    if (this.wake) this.wake();
  }

  async run() {
    let delay = 500;
    let refreshed = false;
    while (!this.closed) {
      this.onState("connecting");
      this.controller = new AbortController();
      const headers = { ...authHeader(), Accept: "text/event-stream" };
      let url = `/api/v1/sessions/${this.sessionId}/events?partial=1`;
      if (this.lastSeq !== null) {
        headers["Last-Event-ID"] = String(this.lastSeq);
        url += `&after_seq=${this.lastSeq}`;
      }
      try {
        const response = await fetch(url, { headers, signal: this.controller.signal, cache: "no-store", credentials: "same-origin" });
        if (response.status === 401) {
          if (!refreshed && (await refresh())) {
            refreshed = true;
            continue;
          }
          // The sign-in is over: an API call now lets the shell show the sign-in form.
          await api("GET", "/auth/me").catch(() => {});
          this.onGone(new Error("Signed out."));
          return;
        }
        if (response.status === 404) {
          this.onGone(Object.assign(new Error("This session no longer exists."), { status: 404 }));
          return;
        }
        if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
        refreshed = false;
        await readEvents(response.body, (frame) => {
          if (frame.type === "connected") {
            delay = 500;
            this.onState("live");
            if (this.lastSeq === null && frame.data) this.lastSeq = Number(frame.data.latest_seq || 0);
          }
          if (frame.seq != null) {
            if (this.lastSeq !== null && frame.seq <= this.lastSeq) return; // already seen
            this.lastSeq = frame.seq;
          }
          this.onFrame(frame);
        });
        // A clean end (the server restarting): reconnect from the last seq.
      } catch (error) {
        if (this.closed) return;
        if (!(error instanceof TypeError) && error.name !== "AbortError" && !String(error.message).startsWith("stream")) {
          console.warn("event stream:", error);
        }
      }
      if (this.closed) return;
      this.onState("offline");
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, delay + Math.random() * 250);
      });
      this.wake = null;
      delay = Math.min(delay * 2, 15000);
    }
  }
}

/** Read Server-Sent Events records from a byte stream, calling `onFrame` with each record's JSON data. */
export async function readEvents(body, onFrame) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let carry = "";
  let held = "";
  let data = [];
  const dispatch = () => {
    if (data.length) {
      let frame = null;
      try {
        frame = JSON.parse(data.join("\n"));
      } catch {
        frame = null;
      }
      data = [];
      if (frame && typeof frame === "object") onFrame(frame);
    }
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let text = held + decoder.decode(value, { stream: true });
      held = "";
      if (text.endsWith("\r")) {
        held = "\r";
        text = text.slice(0, -1);
      }
      const lines = (carry + text.replace(/\r\n?/g, "\n")).split("\n");
      carry = lines.pop();
      for (const line of lines) {
        if (line === "") dispatch();
        else if (line.startsWith(":")) continue;
        else {
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (name === "data") data.push(value);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

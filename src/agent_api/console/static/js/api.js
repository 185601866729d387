// The API from the browser: the access token lives in memory only; the refresh token is an HttpOnly cookie the
// server set at sign-in, so no script can read either from storage.

const BASE = "/api/v1";
let accessToken = null;
let currentUser = null;
let refreshing = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export function user() {
  return currentUser;
}

/** Called with the signed-in user, or null when the sign-in ended (so the page shows the sign-in form). */
export function onAuthChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function setUser(value) {
  currentUser = value;
  for (const fn of listeners) fn(value);
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body && body.error;
  const message = (error && error.message) || `${response.status} ${response.statusText || "error"}`;
  return new ApiError(response.status, (error && error.code) || "http_error", message, error && error.details);
}

export async function signIn(username, password) {
  const response = await fetch(`${BASE}/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
    credentials: "same-origin",
  });
  if (!response.ok) throw await errorOf(response);
  accessToken = (await response.json()).access_token;
  setUser(await api("GET", "/auth/me"));
  return currentUser;
}

/**
 * A new access token from the refresh cookie. Tabs take turns (a Web Lock), so two tabs refreshing at once never
 * present the same refresh token twice, which the server would take for token theft and end the sign-in.
 */
export function refresh() {
  if (!refreshing) {
    const run = async () => {
      const response = await fetch(`${BASE}/auth/refresh`, { method: "POST", credentials: "same-origin" });
      if (!response.ok) return false;
      accessToken = (await response.json()).access_token;
      return true;
    };
    const locked = navigator.locks ? navigator.locks.request("agent-api-refresh", run) : run();
    refreshing = locked.finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** On page load: the sign-in the refresh cookie still holds, if any. */
export async function resume() {
  if (!(await refresh())) return null;
  try {
    setUser(await api("GET", "/auth/me"));
  } catch {
    setUser(null);
  }
  return currentUser;
}

export async function signOut() {
  try {
    await api("POST", "/auth/logout");
  } finally {
    accessToken = null;
    setUser(null);
  }
}

function request(method, path, body, headers) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (accessToken) init.headers.Authorization = `Bearer ${accessToken}`;
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path.startsWith("/api/") ? path : `${BASE}${path}`, init);
}

/** The raw response of an API call (refreshing the token once on a 401); throws ApiError on 4xx/5xx. */
export async function call(method, path, body, headers = {}) {
  let response = await request(method, path, body, headers);
  if (response.status === 401 && (await refresh())) {
    response = await request(method, path, body, headers);
  }
  if (response.status === 401 && currentUser) setUser(null);
  if (!response.ok) throw await errorOf(response);
  return response;
}

/** An API call's JSON answer (null for 204). */
export async function api(method, path, body, headers) {
  const response = await call(method, path, body, headers);
  return response.status === 204 ? null : response.json();
}

export function authHeader() {
  return accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
}

/** A URL a browser can open or download without the token in it: a single-use ticket for that one path. */
export async function ticketUrl(path) {
  const { url } = await api("POST", "/auth/download-ticket", { path: path.startsWith("/api/") ? path : `${BASE}${path}` });
  return url;
}

/** Build a query string, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

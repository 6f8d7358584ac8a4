// api.js — the Natter REST client of the web app.
//
// One browser profile is one Natter device: the session (tokens, device id,
// user) lives in localStorage and every tab of the profile shares it. An
// access token that expired (401 token_expired) is refreshed once, under a
// cross-tab lock so that two tabs never rotate the same refresh token, and the
// request is retried; the user never notices. Errors are thrown as ApiError,
// carrying the RFC 9457 problem (code, status, field, retry-after).

const SESSION_KEY = "natter.session";
const SERVER_KEY = "natter.server";

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.code = this.problem.code || (status === 0 ? "network_error" : `http_${status}`);
    this.field = this.problem.field || null;
    this.retryAfter = retryAfter;
  }
}

// The API's base URL: empty means the origin that served the page. Set it to
// another natter-api (that lists this page's origin in NATTER_CORS_ORIGINS).
export function serverUrl() {
  return localStorage.getItem(SERVER_KEY) || "";
}

export function setServerUrl(url) {
  const u = (url || "").trim().replace(/\/+$/, "");
  if (u) localStorage.setItem(SERVER_KEY, u);
  else localStorage.removeItem(SERVER_KEY);
}

export function loadSession() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

function saveSession(s) {
  if (s) localStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else localStorage.removeItem(SESSION_KEY);
}

// a uuid v4 from getRandomValues (crypto.randomUUID needs a secure context)
export function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function withLock(name, fn) {
  if (navigator.locks) return navigator.locks.request(name, fn);
  return fn();
}

async function parseProblem(res) {
  const ct = res.headers.get("Content-Type") || "";
  if (ct.includes("json")) {
    try {
      return await res.json();
    } catch {
      return null;
    }
  }
  return null;
}

export class Api {
  constructor() {
    this.onSignedOut = () => {};
  }

  get session() {
    return loadSession();
  }

  url(path) {
    return serverUrl() + path;
  }

  // One HTTP exchange. body: an object (sent as JSON) or undefined.
  async raw(method, path, body, opts = {}) {
    const headers = {};
    const s = loadSession();
    if (opts.auth !== false && s) headers.Authorization = `Bearer ${s.access_token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(this.url(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: opts.signal,
        cache: "no-store",
      });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, { title: "Cannot reach the server", detail: "Check your connection." });
    }
    return res;
  }

  async request(method, path, body, opts = {}) {
    const sent = loadSession();
    let res = await this.raw(method, path, body, opts);
    if (res.status === 401 && opts.auth !== false && sent) {
      const p = await parseProblem(res);
      if (p && p.code === "token_expired") {
        await this.refresh(sent.access_token);
        res = await this.raw(method, path, body, opts);
      } else {
        const err = new ApiError(401, p, null);
        if (p && (p.code === "device_revoked" || p.code === "invalid_token")) this.signOutLocal();
        throw err;
      }
    }
    if (res.status === 204 || res.status === 304) return null;
    if (!res.ok) {
      const p = await parseProblem(res);
      const ra = res.headers.get("Retry-After");
      const err = new ApiError(res.status, p, ra ? Number(ra) : null);
      if (res.status === 401 && ["device_revoked", "invalid_token", "token_expired"].includes(err.code))
        this.signOutLocal();
      throw err;
    }
    const ct = res.headers.get("Content-Type") || "";
    return ct.includes("json") ? res.json() : res.text();
  }

  get(path, opts) {
    return this.request("GET", path, undefined, opts);
  }
  post(path, body, opts) {
    return this.request("POST", path, body, opts);
  }
  patch(path, body) {
    return this.request("PATCH", path, body);
  }
  put(path, body) {
    return this.request("PUT", path, body);
  }
  del(path) {
    return this.request("DELETE", path);
  }

  // Rotates the refresh token once for every tab: under the lock, a tab whose
  // expired token was already replaced by another tab just uses the new one.
  async refresh(expiredAccess) {
    await withLock("natter-refresh", async () => {
      const s = loadSession();
      if (!s) throw new ApiError(401, { code: "unauthorized", title: "Signed out" });
      if (s.access_token !== expiredAccess) return; // another tab refreshed
      const res = await this.raw("POST", "/v1/auth/refresh", { refresh_token: s.refresh_token }, { auth: false });
      if (!res.ok) {
        const p = await parseProblem(res);
        if (res.status === 401) this.signOutLocal();
        throw new ApiError(res.status, p, null);
      }
      const t = await res.json();
      saveSession({ ...s, access_token: t.access_token, refresh_token: t.refresh_token, user: t.user });
    });
  }

  async register(username, password, displayName) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    return this.request("POST", "/v1/auth/register", body, { auth: false });
  }

  async login(username, password) {
    const ua = navigator.userAgent;
    const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrom/.test(ua) ? "Chromium" : /Safari\//.test(ua) ? "Safari" : "Browser";
    const t = await this.request(
      "POST",
      "/v1/auth/login",
      { username, password, device_name: `${browser} on ${navigator.platform || "the web"}`.slice(0, 64), platform: "web" },
      { auth: false },
    );
    saveSession({
      access_token: t.access_token,
      refresh_token: t.refresh_token,
      device_id: t.device_id,
      user: t.user,
    });
    return t;
  }

  async logout() {
    try {
      await this.post("/v1/auth/logout");
    } finally {
      this.signOutLocal();
    }
  }

  signOutLocal() {
    if (!loadSession()) return;
    saveSession(null);
    this.onSignedOut();
  }
}

// Human words for a problem, for the error banner.
export function describeError(e, limits) {
  if (!(e instanceof ApiError)) return String((e && e.message) || e);
  const p = e.problem;
  switch (e.code) {
    case "rate_limited":
      return `Slow down: too many requests${p.limit ? ` (${p.limit})` : ""}. Try again in ${e.retryAfter || 1} s.`;
    case "payload_too_large":
      return "That is too large for the server.";
    case "attachment_too_large":
      return `The file is too large (at most ${fmtBytes(p.max_bytes || (limits && limits.attachments.max_bytes) || 0)}).`;
    case "content_type_not_allowed":
      return "This kind of file cannot be sent here.";
    case "too_many_pending_attachments":
      return `Too many unfinished uploads (at most ${p.max_pending}). Wait a moment and retry.`;
    case "service_unavailable":
      return `The server is busy. Retrying in ${e.retryAfter || 1} s.`;
    case "network_error":
      return "Cannot reach the server. Check your connection.";
    case "validation_failed":
    case "weak_password":
      return `${p.detail || p.title}${e.field ? ` (${e.field})` : ""}`;
    default:
      return p.detail || p.title || e.message;
  }
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(1)} GB`;
}

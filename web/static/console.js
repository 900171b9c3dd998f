// Shared by the admin dashboard and the driver console: the page's configuration, the
// signed-in token, calls to the /v1 API, and a relay connection that catches up by itself.

export async function loadConfig() {
  const response = await fetch("/console/config.json");
  return response.json();
}

// The token lives in sessionStorage: it is gone when the tab closes and never enters a URL.
// It is opaque here: whatever POST /v1/users returned, sent back as a bearer token.
export class SignIn {
  constructor(kind) {
    this.key = `smartroute.${kind}`;
  }
  get token() { return sessionStorage.getItem(`${this.key}.token`); }
  set token(value) {
    sessionStorage.setItem(`${this.key}.token`, value);
    sessionStorage.removeItem(`${this.key}.last_event_id`);
  }
  get lastEventId() {
    const raw = sessionStorage.getItem(`${this.key}.last_event_id`);
    return raw === null ? null : Number(raw);
  }
  set lastEventId(value) { sessionStorage.setItem(`${this.key}.last_event_id`, String(value)); }
  // After a resync the page holds no replayable place: it asks for no replay until the
  // next push gives it one.
  forgetLastEventId() { sessionStorage.removeItem(`${this.key}.last_event_id`); }
  clear() {
    sessionStorage.removeItem(`${this.key}.token`);
    sessionStorage.removeItem(`${this.key}.last_event_id`);
  }
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

export async function call(token, method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// A Socket.IO connection to the relay. On every (re)connection the auth payload carries
// the last event_id seen, and the relay replays what came after it: a dropped connection
// or a reloaded page misses nothing. When the relay's replay cannot cover that much (the
// client was away too long, or the relay's log was lost) it sends resync_required instead,
// and the page reloads its state over HTTP. Delivery is at least once, so copies are
// dropped by event_id.
export function connectRelay(url, signIn, handlers) {
  const seen = new Set();
  const socket = window.io(url, {
    // WebSocket only: no long-polling, so several relays need no sticky sessions.
    transports: ["websocket"],
    reconnectionDelayMax: 5000,
    auth: (send) => {
      const last = signIn.lastEventId;
      send(last === null ? { token: signIn.token } : { token: signIn.token, last_event_id: last });
    },
  });
  const fresh = (data) => {
    const id = data?.event_id;
    if (typeof id !== "number") return true;
    if (seen.has(id)) return false;
    seen.add(id);
    if (seen.size > 2000) seen.delete(seen.values().next().value);
    if (id > (signIn.lastEventId ?? -1)) signIn.lastEventId = id;
    return true;
  };
  for (const [event, handler] of Object.entries(handlers.events || {})) {
    socket.on(event, (data) => { if (fresh(data)) handler(data); });
  }
  socket.on("resync_required", () => {
    signIn.forgetLastEventId();
    seen.clear();
    handlers.onResync?.();
  });
  socket.on("connect", () => handlers.onStatus?.("live"));
  socket.on("disconnect", () => handlers.onStatus?.("reconnecting"));
  socket.on("connect_error", (error) => {
    handlers.onStatus?.("offline", error.message);
    // A refused last_event_id (a stored value gone bad) would be refused again on every
    // try, and a refusal is not retried by itself: drop it, and connect without a replay.
    if (error.data?.field === "last_event_id" && signIn.lastEventId !== null) {
      signIn.forgetLastEventId();
      handlers.onResync?.();
      socket.connect();
    } else if (error.message?.startsWith("relay_stopping")) {
      // A relay on its way out (a deploy) turns connections away; behind a proxy the next
      // try reaches another relay, here the one that replaces it. Refusals are not retried
      // by the client itself.
      setTimeout(() => socket.connect(), 1000);
    }
  });
  return socket;
}

// Signing in and going live, the same on every page. The token comes from the form, or is
// the one kept from the last visit; the page's first refresh tries it. Then the page goes
// live: pushes through the relay, and a refresh every pollMs for what no push says (and
// after every reconnection, since the relay replays only what its streams still hold).
// onResync (default: refresh) reloads what the page shows when the relay cannot replay.
export async function enterConsole(signIn, {
  panel, refresh, events, notYours, pollMs, onLive, onResync = refresh,
}) {
  const config = await loadConfig();
  const open = async () => {
    try {
      await refresh();
    } catch (error) {
      $("#sign-in-error").textContent = error instanceof ApiError && error.status === 403
        ? notYours : error.message;
      signIn.clear();
      return;
    }
    $("#sign-in").hidden = true;
    $(panel).hidden = $("#relay-status").hidden = $("#sign-out").hidden = false;
    const socket = connectRelay(config.relay_url, signIn, {
      events,
      onResync: () => onResync().catch(() => {}),
      onStatus: (status, detail) => {
        showRelayStatus($("#relay-status"), status, detail);
        if (status === "live") refresh().catch(() => {});
      },
    });
    setInterval(() => refresh().catch(() => {}), pollMs);
    onLive?.(socket);
  };
  $("#sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    signIn.token = $("#token").value.trim();
    await open();
  });
  $("#sign-out").addEventListener("click", () => { signIn.clear(); location.reload(); });
  if (signIn.token) await open();
}

export function showRelayStatus(element, status, detail) {
  const labels = { live: "Live", reconnecting: "Reconnecting…", offline: "Relay unreachable" };
  element.textContent = labels[status] || status;
  element.dataset.status = status;
  element.title = detail || "";
}

export function $(selector) { return document.querySelector(selector); }

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : "–";
}

export function place(point) {
  return `${point.lat.toFixed(4)}, ${point.lng.toFixed(4)}`;
}

export function statusLabel(status) {
  return status.replace("_", " ");
}

// An amount in a currency's minor units (as the API gives every amount), shown in that
// currency with its own number of decimals: 2 for EUR, 0 for JPY, 3 for KWD. A blind ÷100
// would price a ¥500 ride at ¥5.
const moneyFormats = new Map();
export function money(amount, currency) {
  if (amount === null || amount === undefined || !currency) return "–";
  let format = moneyFormats.get(currency);
  if (!format) {
    format = new Intl.NumberFormat(undefined, { style: "currency", currency });
    moneyFormats.set(currency, format);
  }
  return format.format(amount / 10 ** format.resolvedOptions().maximumFractionDigits);
}

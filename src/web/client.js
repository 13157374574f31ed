// wsline browser client: one room, one socket, reconnects by itself.
//
//   import { connect } from "https://chat.example.com/wsline/client.js";
//   const room = connect({ room: "room1", name: "alice" });
//   room.addEventListener("message", (e) => console.log(e.detail.from, e.detail.data));
//   room.addEventListener("presence", (e) => console.log(e.detail.count, e.detail.members));
//   room.addEventListener("status", (e) => console.log(e.detail.state));
//   room.send("hello");
//
// No dependencies. Served by wsline at /client.js when web.enabled; wsline fills in `settings`
// below from its configuration (presence format, envelope, echo, app ping), so a page needs no
// options beyond room and name. A copy served from elsewhere takes them as options instead.
//
// - The socket URL is relative to where this module was loaded from (or `options.url`), so it
//   works under any prefix, e.g. nginx's /wsline/.
// - At most one socket at a time: a new one is opened only after the previous one has closed.
// - Reconnects with jittered exponential backoff (0.5 s doubling to 30 s, each delay 50-100 %
//   of the step); stops on close 1008 (name taken, rate limit) and after close().
// - Sends the app ping (heartbeat.app_ping) every `pingEvery` ms when one is configured, and
//   treats a connection that answered nothing for two periods as dead.
// - Presence in every format becomes a `presence` event with the current member list.

/** What the wsline that served this file is configured to do (empty in a copy). */
export const settings = /*wsline:settings*/ {} /*end*/;

const CLOSE_POLICY = 1008;
const STABLE_AFTER_MS = 5000;

/**
 * Connects to a room. Options (all optional):
 *   room       room name; "" or absent = the default room
 *   name       presence name (?name=), unique in the room
 *   token      security.token, when the server requires one (?token=)
 *   url        wsline's base URL (http(s) or ws(s)); default: where this module came from
 *   presence   "json" | "plain" | "off"      (default: the server's presence.format)
 *   envelope   "json" | "none"               (default: the server's relay.envelope)
 *   appPing, appPong  strings; "" = no app ping (default: the server's heartbeat settings)
 *   pingEvery  ms between app pings (default 25000)
 *   minDelay, maxDelay  reconnect backoff bounds in ms (default 500, 30000)
 * Events (CustomEvent, fields in `detail`):
 *   message   {data, from, room, verified, binary}: `from` is the server-checked sender name
 *             when the envelope is on (`verified: true`), else undefined
 *   presence  {count, total, members, more, joined, left, initial}: `members` is the sorted
 *             name list (null with plain counts); `joined`/`left` the change since the last
 *             event; `initial` is true for the first state after each (re)connect
 *   status    {state, code, reason, attempt, delay}: state is "connecting", "open",
 *             "reconnecting" (with the delay in ms), "refused" (1008: will not reconnect)
 *             or "closed" (after close())
 */
export function connect(options = {}) {
  return new Room(options);
}

export class Room extends EventTarget {
  constructor(options = {}) {
    super();
    const o = { ...settings, ...options };
    this.room = o.room || "";
    this.name = o.name || "";
    this.presenceFormat = o.presence || "json";
    this.envelope = o.envelope || "none";
    this.appPing = o.appPing || "";
    this.appPong = o.appPong || "";
    this.pingEvery = o.pingEvery || 25000;
    this.minDelay = o.minDelay || 500;
    this.maxDelay = o.maxDelay || 30000;
    this.url = socketUrl(o.url || new URL(".", import.meta.url), this.room, this.name, o.token);
    this.members = new Set();
    this.attempt = 0;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    this.open();
  }

  /** True while the socket is open. */
  get connected() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  /** Sends text (or binary); returns false when not connected (nothing is queued). */
  send(data) {
    if (!this.connected) return false;
    this.socket.send(data);
    return true;
  }

  /** Closes for good (no reconnect); resolves once the socket is closed. */
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    if (!socket) {
      this.status("closed");
      return Promise.resolve();
    }
    socket.close(1000);
    return new Promise((resolve) => socket.addEventListener("close", () => resolve()));
  }

  open() {
    this.timer = null;
    if (this.stopped || this.socket) return;
    this.status("connecting");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    let initial = true;
    let heard = Date.now();
    let stable = null;
    let ping = null;
    ws.onopen = () => {
      this.status("open");
      // A connection that lasts resets the backoff; one closed at once keeps backing off.
      stable = setTimeout(() => { this.attempt = 0; }, STABLE_AFTER_MS);
      if (this.appPing) {
        ping = setInterval(() => {
          if (Date.now() - heard > 2 * this.pingEvery) {
            ws.close(); // dead link: nothing heard for two periods; reconnects on close
            return;
          }
          ws.send(this.appPing);
        }, this.pingEvery);
      }
    };
    ws.onmessage = (m) => {
      heard = Date.now();
      if (typeof m.data !== "string") {
        this.emit("message", { data: m.data, binary: true });
        return;
      }
      const text = m.data;
      if (this.appPong && text === this.appPong) return;
      const presence = this.parsePresence(text);
      if (presence) {
        this.applyPresence(presence, initial);
        initial = false;
        return;
      }
      if (this.envelope === "json" && text.startsWith('{"type":"message"')) {
        try {
          const e = JSON.parse(text);
          this.emit("message", { data: e.data, from: e.from, room: e.room, verified: true });
          return;
        } catch (_) { /* not an envelope after all: a raw line */ }
      }
      this.emit("message", { data: text });
    };
    // An error is always followed by close, which decides what happens next.
    ws.onerror = () => {};
    ws.onclose = (c) => {
      clearTimeout(stable);
      clearInterval(ping);
      this.socket = null;
      if (this.stopped) {
        this.status("closed", c);
      } else if (c.code === CLOSE_POLICY) {
        this.stopped = true;
        this.status("refused", c);
      } else {
        const step = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
        const delay = Math.round(step * (0.5 + Math.random() / 2));
        this.attempt += 1;
        this.status("reconnecting", c, delay);
        this.timer = setTimeout(() => this.open(), delay);
      }
    };
  }

  /** The presence message in `text`, if it is one: {count, total, names?, more?, joined?, left?}. */
  parsePresence(text) {
    if (this.presenceFormat === "plain") {
      return /^[0-9]+$/.test(text) ? { count: Number(text) } : null;
    }
    if (this.presenceFormat === "off" || !text.startsWith('{"type":"presence"')) return null;
    try {
      return JSON.parse(text);
    } catch (_) {
      return null;
    }
  }

  /** A full state (`names`, or no change lists) replaces the list; `joined`/`left` change it. */
  applyPresence(p, initial) {
    let joined = [];
    let left = [];
    if (this.presenceFormat === "plain") {
      this.members = null;
    } else if (p.joined || p.left) {
      joined = (p.joined || []).filter((n) => !this.members.has(n));
      left = (p.left || []).filter((n) => this.members.has(n));
      for (const n of left) this.members.delete(n);
      for (const n of joined) this.members.add(n);
    } else {
      const next = new Set(p.names || []);
      if (!initial) {
        joined = [...next].filter((n) => !this.members.has(n));
        left = [...this.members].filter((n) => !next.has(n));
      }
      this.members = next;
    }
    this.emit("presence", {
      count: p.count,
      total: p.total,
      members: this.members ? [...this.members].sort() : null,
      more: p.more || 0,
      joined,
      left,
      initial,
    });
  }

  status(state, close, delay) {
    this.emit("status", {
      state,
      code: close ? close.code : undefined,
      reason: close ? close.reason : undefined,
      attempt: this.attempt,
      delay,
    });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** ws(s)://BASE/ROOM?name=..&token=.. from an http(s) or ws(s) base URL. */
export function socketUrl(base, room = "", name = "", token = "") {
  const url = new URL(room ? encodeURIComponent(room) : "./", new URL(base, location.href));
  url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
  const query = new URLSearchParams();
  if (name) query.set("name", name);
  if (token) query.set("token", token);
  url.search = query.toString();
  url.hash = "";
  return url.href;
}

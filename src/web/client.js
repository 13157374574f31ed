// wsline browser client: one room, one socket, reconnects by itself.
//
//   import { connect } from "https://chat.example.com/wsline/client.js";
//   const room = connect({ room: "room1", name: "alice" });
//   room.addEventListener("message", (e) => console.log(e.detail.from, e.detail.data));
//   room.addEventListener("presence", (e) => console.log(e.detail.count, e.detail.members));
//   room.addEventListener("status", (e) => console.log(e.detail.state));
//   room.send("hello");
//
// No dependencies. Served by wsline at /client.js (unless web.client = false); wsline fills in
// `settings` below from its configuration (presence format, envelope, echo, app ping, and each
// [[rooms]] entry's own), so a page needs no options beyond room and name. A copy served from
// elsewhere takes them as options instead.
//
// - The socket URL is relative to where this module was loaded from (or `options.url`), so it
//   works under any prefix, e.g. nginx's /wsline/.
// - The room's settings are the first [[rooms]] entry matching the room, as the server picks them.
// - A room name (and a name) is checked before connecting: an invalid one is reported at once
//   ("refused") instead of being retried, since the server answers it with a 400 that a browser
//   only sees as 1006.
// - Sends ?session=ID, a random id kept per tab (sessionStorage): a reconnect after a network
//   drop takes its name over from its own ghost connection instead of getting "name taken".
// - At most one socket at a time: a new one is opened only after the previous one has closed,
//   except a dead link's, which is abandoned (its close handshake can keep Chromium waiting for
//   minutes).
// - Reconnects with jittered exponential backoff (0.5 s doubling to 30 s, each delay 50-100 %
//   of the step); stops on close 1008 (name taken, rate limit), on 4001 (this session was taken
//   over by another tab), on 4003 (kicked by the backend) and after close(), and always says why
//   in a `status` event. Close 4002 (signed token expired) reconnects with a fresh token when
//   `token` is a function.
// - Sends the app ping (heartbeat.app_ping) every `pingEvery` ms when one is configured, and
//   treats a connection that answered nothing for two periods as dead.
// - Presence in every format becomes a `presence` event with the current member list.
// - Recovery: in a room that numbers its messages (history with the JSON envelope), remembers the
//   room's epoch and the last number seen, reconnects with ?since=EPOCH:SEQ, never emits a
//   message twice, and after each reconnect emits `recovered` {count, gap}: how many missed
//   messages were replayed, and the server's gap notice when not all of them could be.

/** What the wsline that served this file is configured to do (empty in a copy). */
export const settings = /*wsline:settings*/ {} /*end*/;

const CLOSE_POLICY = 1008;
const CLOSE_REPLACED = 4001;
const CLOSE_KICKED = 4003;
const STABLE_AFTER_MS = 5000;
const SESSION_KEY = "wsline-session";

/**
 * Connects to a room. Options (all optional):
 *   room       room name; "" or absent = the default room
 *   name       presence name (?name=), unique in the room
 *   token      the token sent as ?token=: security.token, or a signed token ([security.jwt]);
 *              a string, or a function returning a Promise of one, called before every
 *              (re)connect so each socket gets a fresh token (e.g. after close 4002, expired)
 *   session    the id sent as ?session= (default: a random one kept per tab in sessionStorage;
 *              false: none, so a reconnect after a drop may meet "name taken" until the ghost
 *              connection times out)
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
 *   recovered {count, gap}: after a reconnect, the missed messages replayed (`gap`: the server's
 *             notice {reason, ...} when history could not reach back far enough, else null)
 *   status    {state, code, reason, attempt, delay}: state is "connecting", "open",
 *             "reconnecting" (with the delay in ms), "refused" (1008, 4003 kicked, or a room name or name
 *             the server would refuse, with `reason`: will not reconnect), "replaced" (4001:
 *             another tab with this session took the name over; will not reconnect) or
 *             "closed" (after close())
 */
export function connect(options = {}) {
  return new Room(options);
}

export class Room extends EventTarget {
  constructor(options = {}) {
    super();
    this.room = (options.room || "").normalize("NFC");
    const o = { ...roomSettings(settings, this.room), ...options };
    this.name = (o.name || "").normalize("NFC");
    this.requireName = Boolean(o.requireName);
    this.presenceFormat = o.presence || "json";
    this.envelope = o.envelope || "none";
    this.appPing = o.appPing || "";
    this.appPong = o.appPong || "";
    this.pingEvery = o.pingEvery || 25000;
    this.minDelay = o.minDelay || 500;
    this.maxDelay = o.maxDelay || 30000;
    this.echo = o.echo !== false;
    this.session = o.session === false ? "" : o.session || tabSession();
    this.base = o.url || new URL(".", import.meta.url);
    this.token = o.token;
    this.url = socketUrl(this.base, this.room, this.name,
      typeof o.token === "function" ? "" : o.token, this.session);
    this.members = new Set();
    // Recovery: the room's epoch (from its presence state) and the last message number seen.
    this.epoch = "";
    this.seq = 0;
    this.attempt = 0;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    const problem = this.problem();
    if (problem) {
      // Reported once the page had a chance to listen; never sent to the server.
      this.stopped = true;
      queueMicrotask(() => this.status("refused", { code: undefined, reason: problem }));
      return;
    }
    this.open();
  }

  /** Why the server would refuse this room or name (a 400), or "" when it would not. */
  problem() {
    if (this.room && !isRoomName(this.room)) {
      return "bad room name: use 1-64 letters or digits (any script) and . _ - (not . or ..)";
    }
    if (this.name) {
      const n = [...this.name].length;
      if (n > 64) return "bad name: longer than 64 characters";
      if (/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(this.name)) {
        return "bad name: contains a control, format or invisible character";
      }
      if (/[^\S ]/u.test(this.name) || this.name !== this.name.trim()) {
        return "bad name: whitespace other than spaces between words";
      }
    } else if (this.requireName) {
      return "name required: this room lists its members, join with a name";
    }
    return "";
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
    if (this.stopped || this.socket || this.fetching) return;
    this.status("connecting");
    if (typeof this.token !== "function") {
      this.dial(this.socketUrl(this.token));
      return;
    }
    // A fresh token for every socket: the last one may have expired (close 4002).
    this.fetching = true;
    Promise.resolve()
      .then(() => this.token())
      .then(
        (token) => {
          this.fetching = false;
          if (this.stopped || this.socket) return;
          this.dial(this.socketUrl(token));
        },
        (e) => {
          this.fetching = false;
          if (this.stopped) return;
          this.retry({ code: undefined, reason: `no token: ${e}` });
        },
      );
  }

  /** This socket's URL: with ?since= once a numbered message of this room's epoch was seen. */
  socketUrl(token) {
    const since = this.epoch && this.seq ? `${this.epoch}:${this.seq}` : "";
    return socketUrl(this.base, this.room, this.name, token, this.session, since);
  }

  /** Reconnects after a jittered, growing delay. */
  retry(c) {
    const step = Math.min(this.maxDelay, this.minDelay * 2 ** this.attempt);
    const delay = Math.round(step * (0.5 + Math.random() / 2));
    this.attempt += 1;
    this.status("reconnecting", c, delay);
    this.timer = setTimeout(() => this.open(), delay);
  }

  dial(url) {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    let initial = true;
    // Until the first presence state: what this socket replayed (numbered messages, a gap).
    const reconnect = this.seq > 0;
    let replayed = 0;
    let gap = null;
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
            // Dead link: nothing heard for two periods. Its close handshake cannot complete
            // (Chromium would wait minutes for it), so the socket is abandoned and the next one opened;
            // the server gives the name to the new one (same session) and closes the ghost.
            ws.onclose = ws.onmessage = null;
            ws.close();
            ended({ code: 1006, reason: "no answer to the app ping" });
            return;
          }
          // A socket the server is closing (a drain's 1001) is CLOSING until its close event,
          // which clears this timer; sending on it only logs an error.
          if (ws.readyState === WebSocket.OPEN) ws.send(this.appPing);
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
        if (initial && presence.epoch !== undefined) {
          if (this.epoch && presence.epoch !== this.epoch && !gap) this.seq = 0;
          this.epoch = presence.epoch;
        }
        if (initial && reconnect) this.emit("recovered", { count: replayed, gap });
        this.applyPresence(presence, initial);
        initial = false;
        return;
      }
      if (initial && text.startsWith('{"type":"gap"')) {
        try {
          gap = JSON.parse(text);
          // The room started over: its numbers did too.
          if (gap.reason !== "history") this.seq = 0;
          return;
        } catch (_) { /* not a notice after all */ }
      }
      if (this.envelope === "json" && text.startsWith('{"type":"message"')) {
        try {
          const e = JSON.parse(text);
          if (typeof e.seq === "number") {
            // Never shown twice: a number at or below the last one seen was shown already.
            if (e.seq <= this.seq) return;
            this.seq = e.seq;
            if (initial && reconnect) replayed += 1;
          }
          this.emit("message", {
            data: e.data, from: e.from, room: e.room, verified: true, seq: e.seq,
            source: e.source,
          });
          return;
        } catch (_) { /* not an envelope after all: a raw line */ }
      }
      this.emit("message", { data: text });
    };
    // An error is always followed by close, which decides what happens next.
    ws.onerror = () => {};
    const ended = (c) => {
      clearTimeout(stable);
      clearInterval(ping);
      this.socket = null;
      if (this.stopped) {
        this.status("closed", c);
      } else if (c.code === CLOSE_POLICY || c.code === CLOSE_KICKED) {
        this.stopped = true;
        this.status("refused", c);
      } else if (c.code === CLOSE_REPLACED) {
        this.stopped = true;
        this.status("replaced", c);
      } else {
        this.retry(c);
      }
    };
    ws.onclose = ended;
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

/**
 * Whether `room` is a room name wsline accepts: in NFC, 1-64 letters, marks (not first) or
 * digits of any script and . _ -, not . or .., no invisible letters or marks.
 */
export function isRoomName(room) {
  return room === room.normalize("NFC") && room !== "." && room !== ".." &&
    /^(?!\p{M})[\p{L}\p{M}\p{Nd}._-]+$/u.test(room) && [...room].length <= 64 &&
    !/[\u034F\u115F\u1160\u17B4\u17B5\u180B-\u180F\u3164\uFE00-\uFE0F\uFFA0\u{E0100}-\u{E01EF}]/u.test(room);
}

/** The settings of `room`: the first entry of `all.rooms` whose `match` fits it, else `all`. */
export function roomSettings(all, room = "") {
  const name = room || all.defaultRoom || "";
  const rule = (all.rooms || []).find((r) =>
    r.match.endsWith("*") ? name.startsWith(r.match.slice(0, -1)) : name === r.match);
  const { rooms, match, ...own } = { ...all, ...rule };
  return own;
}

/** This tab's session id: random, kept in sessionStorage (a new tab gets a new one). */
function tabSession() {
  let id = null;
  try {
    id = sessionStorage.getItem(SESSION_KEY);
  } catch (_) { /* storage disabled: a session for this page only */ }
  if (!id || !/^[A-Za-z0-9_-]{16,128}$/.test(id)) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    id = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    try {
      sessionStorage.setItem(SESSION_KEY, id);
    } catch (_) { /* as above */ }
  }
  return id;
}

/** ws(s)://BASE/ROOM?name=..&token=..&session=.. from an http(s) or ws(s) base URL. */
export function socketUrl(base, room = "", name = "", token = "", session = "", since = "") {
  const url = new URL(room ? encodeURIComponent(room) : "./", new URL(base, location.href));
  url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
  const query = new URLSearchParams();
  if (name) query.set("name", name);
  if (token) query.set("token", token);
  if (session && name) query.set("session", session);
  if (since) query.set("since", since);
  url.search = query.toString();
  url.hash = "";
  return url.href;
}

// The demo chat page (index.html), built on client.js. Served by wsline at /demo.js.
//
// - The room comes from the page's own path (/ROOM opens the page joined to ROOM) and the join
//   form; the page's address follows the room, relative to itself, so it works under a prefix.
// - A name is fixed while joined with it: to speak under another name, Leave first.
// - With relay.envelope = "json" the sender's name is the one the server checked; without it the
//   page sends "name: text" and marks names as unverified. Envelope, echo and presence format
//   are the joined room's own (a [[rooms]] entry may change them).
// - ?ping_ms=N in the page's address sets how often the app ping goes out (when the server has
//   one), e.g. to watch a dead link being noticed.
import { connect, isRoomName } from "./client.js";

const $ = (id) => document.getElementById(id);
const pingEvery = Number(new URLSearchParams(location.search).get("ping_ms")) || undefined;
let envelope = false; // the joined room's relay.envelope is "json"
let echo = true; // the joined room's relay.echo

let room = null; // the client.js Room, while joined
let joinedName = "";
let joinedRoom = null;
let pending = []; // texts sent and not yet echoed back, oldest first

function line(cls, ...parts) {
  const log = $("log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const div = document.createElement("div");
  div.className = cls;
  for (const part of parts) div.append(part);
  log.append(div);
  if (atBottom) log.scrollTop = log.scrollHeight;
  return div;
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

function setStatus(text, cls = "") {
  $("status").textContent = text;
  $("status").className = cls;
}

function roomLabel(r) {
  return r || "the default room";
}

// The room named by the page's address: the last path segment, when it is a room name.
function roomFromPath() {
  let last = "";
  try {
    last = decodeURIComponent(location.pathname.split("/").pop() || "").normalize("NFC");
  } catch (_) { /* not UTF-8: not a room */ }
  return isRoomName(last) ? last : "";
}

function showMessage({ data, from, verified, binary }, mine = false) {
  if (binary) {
    line("msg", `[binary message, ${data.byteLength} bytes]`);
    return;
  }
  // Our own echo: the oldest text we sent and have not seen back (one sender's order holds).
  const echoed = pending.length > 0 && pending[0] === data &&
    (!verified || (from ?? "") === joinedName);
  if (echoed) pending.shift();
  const own = mine || echoed;
  const cls = own ? "msg own" : "msg";
  if (verified) {
    line(cls, span("from", from ?? "anonymous"), ": ", data);
    return;
  }
  // Raw relay: "name: text" is only what the sender claims.
  const m = /^([^:\n]{1,64}): ([\s\S]*)$/.exec(data);
  if (m) line(cls, span("from unverified", m[1]), ": ", m[2]);
  else line(cls, data);
}

function showPresence({ count, total, members, more, joined, left, initial }) {
  let text = `${count} here`;
  if (total !== undefined) text += ` (${total} on the server)`;
  if (members && members.length) text += ": " + members.join(", ");
  if (more) text += ` and ${more} more`;
  $("members").textContent = text;
  if (initial) return;
  for (const n of joined) line("sys", `${n} joined`);
  for (const n of left) line("sys", `${n} left`);
}

function showStatus({ state, code, reason, delay, attempt }) {
  const where = `${roomLabel(joinedRoom)}${joinedName ? " as " + joinedName : ""}`;
  const connected = state === "open";
  $("text").disabled = $("send").disabled = !connected;
  if (state === "connecting") {
    setStatus(`connecting to ${where} …`, "wait");
  } else if (connected) {
    setStatus(`connected to ${where}`);
    if (room && room.presenceFormat === "off") $("members").textContent = "(this server does not announce who is here)";
    pending = [];
    $("text").focus();
  } else if (state === "reconnecting") {
    const why = code === 1006 ? "connection lost" : `closed ${code}${reason ? " " + reason : ""}`;
    setStatus(`${why}; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${attempt})`, "wait");
    if (attempt === 1) line("sys", `${why}; reconnecting …`);
  } else if (state === "refused" && code === undefined) {
    // Checked before connecting: the server would have refused it.
    setStatus(`not joined: ${reason}`, "bad");
    line("sys", `not joined: ${reason}`);
    leave(false);
  } else if (state === "refused") {
    setStatus(`refused: ${reason || "policy"} (${code}); not reconnecting`, "bad");
    line("sys", `refused by the server: ${reason || "policy"} (${code})`);
    leave(false);
  } else if (state === "replaced") {
    setStatus(`replaced: this name is in use in another tab of this browser (${code}); not reconnecting`, "bad");
    line("sys", `your name was taken over by another tab with the same session (${code})`);
    leave(false);
  } else if (state === "closed") {
    setStatus("not connected");
  }
}

async function join(roomName, name) {
  // One socket at a time: the old room's closes before the new one opens.
  const previous = room;
  room = null;
  if (previous) await previous.close();
  if (joinedRoom !== null && joinedRoom !== roomName) {
    line("sep", `── ${roomLabel(roomName)} ──`);
  }
  joinedRoom = roomName;
  joinedName = name;
  pending = [];
  $("name").disabled = Boolean(name);
  $("leave").disabled = false;
  $("go").textContent = "Switch room";
  document.title = `${roomLabel(roomName)} · wsline demo chat`;
  history.replaceState(null, "", new URL(roomName ? encodeURIComponent(roomName) : "./", location.href));
  const r = connect({ room: roomName, name, pingEvery });
  room = r;
  envelope = r.envelope === "json";
  echo = r.echo;
  // Events of a room left behind (its last "closed") must not touch the page.
  r.addEventListener("message", (e) => r === room && showMessage(e.detail));
  r.addEventListener("presence", (e) => r === room && showPresence(e.detail));
  r.addEventListener("status", (e) => r === room && showStatus(e.detail));
  r.addEventListener("recovered", (e) => r === room && showRecovered(e.detail));
}

function showRecovered({ count, gap }) {
  if (gap) {
    const why = gap.reason === "epoch" ? "the room started over" : "history does not reach back that far";
    line("sys", `reconnected; some messages may be missing (${why}); ${count} recovered`);
  } else {
    line("sys", `reconnected, ${count} missed messages recovered`);
  }
}

function leave(closeSocket = true) {
  if (room && closeSocket) room.close();
  room = null;
  joinedName = "";
  $("name").disabled = false;
  $("leave").disabled = true;
  $("go").textContent = "Join";
  $("text").disabled = $("send").disabled = true;
  $("members").textContent = "";
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  const roomName = $("room").value.trim().normalize("NFC");
  if (roomName && !isRoomName(roomName)) {
    setStatus("a room name is 1-64 letters or digits (any script) and . _ -", "bad");
    return;
  }
  // A name is fixed while joined with it; without one, joining again may add one.
  const name = joinedName || $("name").value.trim();
  join(roomName, name);
});

$("leave").addEventListener("click", () => {
  leave();
  setStatus("not connected");
  line("sys", "you left");
});

$("say").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!room || !text) return;
  const wire = envelope || !joinedName ? text : `${joinedName}: ${text}`;
  if (room.send(wire)) {
    if (echo) pending.push(wire);
    else showMessage({ data: wire, from: joinedName || null, verified: envelope }, true);
    $("text").value = "";
  }
});

// /ROOM opens the page joined to ROOM (with ?name= from the page's address, if any).
const initialRoom = roomFromPath();
if (initialRoom) {
  $("room").value = initialRoom;
  const name = new URLSearchParams(location.search).get("name") || "";
  $("name").value = name;
  join(initialRoom, name);
}

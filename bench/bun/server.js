// Bun's built-in WebSocket server (uWebSockets inside, topic pub/sub in C++) as a room relay,
// written the way Bun's docs write one: Bun.serve with TLS, every socket subscribed to one topic,
// every message published to it with server.publish (so the sender gets its own message back, as
// from wsline), and the subscriber count published on every open and close. The benchmark's peer,
// run by bench/run.sh with wsline's certificate.
// Usage: bun server.js PORT CERT KEY   (COUNT=0 turns the count broadcast off)
//
// Choices, each to match wsline's defaults rather than Bun's:
// - backpressureLimit 4 MiB with closeOnBackpressureLimit: Bun's default (16 MiB, then publish
//   skips that subscriber and reports it only through a return value nobody reads here) would
//   drop messages without a trace; wsline queues up to limits.queue_bytes (4 MiB) per connection
//   and then closes the slow consumer.
// - maxPayloadLength 64 KiB (wsline's relay.max_message_size), perMessageDeflate off (wsline has
//   none), idleTimeout 120 s with pings (Bun's default; wsline pings every 30 s).
const [port, cert, key] = process.argv.slice(2);
const sendCount = process.env.COUNT !== '0';
const TOPIC = 'room';
let count = 0;

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: Number(port),
  tls: { cert: Bun.file(cert), key: Bun.file(key) },
  fetch(req, srv) {
    if (srv.upgrade(req)) return undefined;
    return new Response('upgrade required', { status: 426 });
  },
  websocket: {
    maxPayloadLength: 64 * 1024,
    backpressureLimit: 4 * 1024 * 1024,
    closeOnBackpressureLimit: true,
    perMessageDeflate: false,
    idleTimeout: 120,
    sendPings: true,
    open(ws) {
      ws.subscribe(TOPIC);
      count += 1;
      if (sendCount) server.publish(TOPIC, String(count));
    },
    message(ws, message) {
      server.publish(TOPIC, message);
    },
    close() {
      count -= 1;
      if (sendCount) server.publish(TOPIC, String(count));
    },
  },
});
console.log(`listening on ${server.port}`);

// uWebSockets.js (the npm build @trufflesuite/uws-js-unofficial) as a room relay, written the way
// its own examples write one: an SSLApp, every socket subscribed to one topic, every message
// published to that topic (app.publish, so the sender gets its own message back, as from wsline),
// and the subscriber count published on every open and close. The benchmark's peer, run by
// bench/run.sh with wsline's certificate.
// Usage: node server.js PORT CERT KEY   (COUNT=0 turns the count broadcast off)
//
// Choices, each to match wsline's defaults rather than uWS's:
// - The native binary is loaded directly: the package's entry point silently falls back to a
//   pure-JS implementation when no binary matches this Node, which would measure the wrong thing.
// - maxBackpressure 4 MiB with closeOnBackpressureLimit: uWS's default (64 KiB, then publish
//   silently skips that subscriber) would drop messages without a trace; wsline queues up to
//   limits.queue_bytes (4 MiB) per connection and then closes the slow consumer.
// - maxPayloadLength 64 KiB (wsline's relay.max_message_size), idleTimeout 120 s with automatic
//   pings (uWS pings at idleTimeout/2; wsline every 30 s, closing after 75 s of silence).
const path = require('path');

const binary = path.join(__dirname, 'node_modules/@trufflesuite/uws-js-unofficial/binaries',
  `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
const uWS = require(binary);

const [port, cert, key] = process.argv.slice(2);
const sendCount = process.env.COUNT !== '0';
const TOPIC = 'room';
let count = 0;
let app;

function broadcastCount() {
  if (sendCount) app.publish(TOPIC, String(count), false);
}

app = uWS.SSLApp({ cert_file_name: cert, key_file_name: key }).ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024,
  maxBackpressure: 4 * 1024 * 1024,
  closeOnBackpressureLimit: true,
  idleTimeout: 120,
  sendPingsAutomatically: true,
  open: (ws) => {
    ws.subscribe(TOPIC);
    count += 1;
    broadcastCount();
  },
  message: (ws, message, isBinary) => {
    app.publish(TOPIC, message, isBinary);
  },
  close: () => {
    count -= 1;
    broadcastCount();
  },
}).listen('127.0.0.1', Number(port), (token) => {
  if (!token) {
    console.error(`uws: cannot listen on ${port}`);
    process.exit(1);
  }
  console.log(`listening on ${port}`);
});

// Before the measurement: real `socket.io-client`s on every node (URLs of server.js processes), all in
// one room; the first one emits `m` and every client, on every node, must receive it within 10 s.
// So the cluster works with socket.io's own client, not only with wsline-bench's (which speaks the
// same protocol: the Engine.IO WebSocket transport, `40` to the main namespace, `42["m","…"]`).
// Usage: node check.js URL...   e.g. node check.js https://127.0.0.1:4458 https://127.0.0.1:4459
const { io } = require('socket.io-client');

const urls = process.argv.slice(2);
const clients = urls.map((url) =>
  io(url, { transports: ['websocket'], query: { room: 'check' }, rejectUnauthorized: false }));
const timer = setTimeout(() => {
  console.error('socket.io check: not every client got the message in 10 s');
  process.exit(1);
}, 10000);

Promise.all(clients.map((c) => new Promise((resolve, reject) => {
  c.on('connect', resolve);
  c.on('connect_error', reject);
})))
  .then(() => {
    let missing = clients.length;
    for (const c of clients) {
      c.on('m', (data) => {
        if (data !== 'check') return;
        missing -= 1;
        if (missing === 0) {
          clearTimeout(timer);
          clients.forEach((x) => x.close());
          console.error(`socket.io check: ${clients.length} clients on ${urls.length} nodes got it`);
        }
      });
    }
    // Every node has its member's subscription in place once all are connected.
    clients[0].emit('m', 'check');
  })
  .catch((e) => {
    console.error(`socket.io check: ${e.message}`);
    process.exit(1);
  });

// The Node `ws` broadcast server as the tutorials write it: https.createServer with a key and cert,
// a WebSocketServer on it, every message relayed to every client, the connection count sent to
// everyone on join and leave. The benchmark's peer, run by bench/run.sh with wsline's certificate.
// Usage: node server.js PORT CERT KEY   (COUNT=0 turns the count broadcast off; HEARTBEAT_MS=30000
// adds the ws README's heartbeat: ping everyone every 30 s, terminate whoever missed the last pong)
const fs = require('fs');
const https = require('https');
const { WebSocketServer, WebSocket } = require('ws');

const [port, cert, key] = process.argv.slice(2);
const sendCount = process.env.COUNT !== '0';
const heartbeatMs = Number(process.env.HEARTBEAT_MS || 0);
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
const wss = new WebSocketServer({ server });

function broadcastCount() {
  if (!sendCount) return;
  const count = String(wss.clients.size);
  wss.clients.forEach((c) => { if (c.readyState === WebSocket.OPEN) c.send(count); });
}

wss.on('connection', (ws) => {
  if (heartbeatMs > 0) {
    ws.isAlive = true;
    ws.on('pong', () => { ws.isAlive = true; });
  }
  broadcastCount();
  ws.on('message', (data, isBinary) => {
    wss.clients.forEach((c) => {
      if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    });
  });
  ws.on('close', broadcastCount);
});

if (heartbeatMs > 0) {
  const interval = setInterval(() => {
    wss.clients.forEach((ws) => {
      if (ws.isAlive === false) return ws.terminate();
      ws.isAlive = false;
      ws.ping();
    });
  }, heartbeatMs);
  wss.on('close', () => clearInterval(interval));
}

server.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${port}`));

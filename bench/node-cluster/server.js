// socket.io as its docs write a multi-node deployment: an https server with a key and cert, a
// socket.io Server on it, and `@socket.io/redis-adapter` on a node-redis pub client and its duplicate
// for subscriptions (https://socket.io/docs/v4/redis-adapter/), so that `io.to(room).emit` reaches
// members on every process. Each socket joins the room named in its `room` query parameter and every
// `m` event is relayed to the whole room, the sender included (as wsline echoes by default).
// The cluster benchmark's peer, run twice by bench/run.sh with wsline's certificate on one Redis.
// Usage: node server.js PORT CERT KEY [REDIS_URL]   (no REDIS_URL: one process, in-memory adapter)
//
// The WebSocket transport only (the load generator speaks it directly, without long-polling first);
// the Engine.IO heartbeat is every 5 minutes so that a run never waits on it (wsline's is 30 s).
const fs = require('fs');
const https = require('https');
const { Server } = require('socket.io');

const [port, cert, key, redisUrl] = process.argv.slice(2);
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
const io = new Server(server, {
  transports: ['websocket'],
  pingInterval: 300000,
  pingTimeout: 60000,
  maxHttpBufferSize: 1e6,
});

io.on('connection', (socket) => {
  const room = String(socket.handshake.query.room || 'bench');
  socket.join(room);
  socket.on('m', (data) => io.to(room).emit('m', data));
});

async function main() {
  if (redisUrl) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pubClient = createClient({ url: redisUrl });
    const subClient = pubClient.duplicate();
    pubClient.on('error', (e) => console.error('redis pub:', e.message));
    subClient.on('error', (e) => console.error('redis sub:', e.message));
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
  }
  server.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${port}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

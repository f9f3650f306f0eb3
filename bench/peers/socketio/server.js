// The Socket.IO peer of herald-bench: the server many teams write by hand to push messages to
// their users.
//
// - Each client connects with `auth: { uid }` and its socket joins a room named after that user
//   (the usual "private messages" pattern), so a user's sockets are addressed by the user id.
// - Clients may join and leave other rooms with the `join` and `leave` events (acknowledged), which
//   the benchmark uses for broadcast rooms and for churn.
// - `POST /send` with `{"to": ["u1", "u7", "r0", …], "message": "…"}` emits the event `msg` with
//   the message to every socket in any of those rooms (each socket once), and answers
//   `{"ok":true}`. That is the "send this to these users" endpoint of the benchmark.
//
// Usage: node server.js [port] [host]   (port 0, the default, picks a free one)
// Prints "socketio listening on http://HOST:PORT" once it accepts connections.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] ?? 0);
const host = process.argv[3] ?? "127.0.0.1";

function answer(res, status, body) {
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

// Requests under /socket.io/ are taken by Socket.IO before this handler sees them.
const httpServer = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/send") {
    answer(res, 404, '{"error":"not found"}');
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      answer(res, 400, '{"error":"body is not JSON"}');
      return;
    }
    if (!Array.isArray(body.to) || body.to.length === 0 || typeof body.message !== "string") {
      answer(res, 400, '{"error":"expected {\\"to\\": [ids], \\"message\\": string}"}');
      return;
    }
    io.to(body.to).emit("msg", body.message);
    answer(res, 200, '{"ok":true}');
  });
});

// WebSocket only (no long-polling), as the benchmark's clients connect; no compression (the
// default for WebSocket in Socket.IO 4).
const io = new Server(httpServer, { transports: ["websocket"], serveClient: false });

io.on("connection", (socket) => {
  const uid = socket.handshake.auth && socket.handshake.auth.uid;
  if (typeof uid === "string" && uid.length > 0) {
    socket.join(uid);
  }
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack("ok");
  });
  socket.on("leave", (room, ack) => {
    socket.leave(String(room));
    if (typeof ack === "function") ack("ok");
  });
});

httpServer.listen(port, host, () => {
  const a = httpServer.address();
  console.log(`socketio listening on http://${a.address}:${a.port}`);
});

process.on("SIGTERM", () => {
  io.close();
  process.exit(0);
});

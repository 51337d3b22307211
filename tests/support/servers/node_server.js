// A Node.js server on the socket at fd 3 (systemd socket activation):
// net.Server.listen({fd: 3}), libuv's epoll loop.
//
// Boots for $SERVER_BOOT_SECONDS (default 1.5), blocking its main thread
// as a synchronous start-up does, before it serves; appends "PID MONOTONIC"
// to $SERVER_SINCE_FILE (if set) just before; answers each connection with
// "pid=PID"; on SIGTERM stops accepting and exits once the connections it
// has are done.
"use strict";
const fs = require("fs");
const net = require("net");

if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  console.error("node_server: no socket passed at fd 3 (LISTEN_PID, LISTEN_FDS)");
  process.exit(1);
}
const bootMs = 1000 * Number(process.env.SERVER_BOOT_SECONDS ?? "1.5");
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, bootMs);
if (process.env.SERVER_SINCE_FILE) {
  const monotonic = Number(process.hrtime.bigint()) / 1e9;
  fs.appendFileSync(process.env.SERVER_SINCE_FILE, `${process.pid} ${monotonic.toFixed(6)}\n`);
}
const server = net.createServer((connection) => {
  connection.end(`pid=${process.pid}\n`);
});
server.listen({ fd: 3 });
process.on("SIGTERM", () => server.close());

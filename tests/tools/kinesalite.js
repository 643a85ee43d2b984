#!/usr/bin/env node
// Starts kinesalite (in-memory Kinesis) on 127.0.0.1 only, for kpld's tests and demo.
// Usage: node kinesalite.js PORT
// kinesalite's own CLI binds every interface, and a client that aborts mid-request can crash
// the node process; the uncaughtException handler below keeps the server up in that case.
'use strict';

const kinesalite = require('kinesalite');

const port = Number.parseInt(process.argv[2], 10);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node kinesalite.js PORT');
  process.exit(2);
}

process.on('uncaughtException', (err) => {
  console.error(`kinesalite: uncaught exception (server keeps running): ${err && err.stack ? err.stack : err}`);
});

const server = kinesalite({ createStreamMs: 10, deleteStreamMs: 10, updateStreamMs: 10, shardLimit: 200 });
server.listen(port, '127.0.0.1', (err) => {
  if (err) {
    console.error(`kinesalite: cannot listen on 127.0.0.1:${port}: ${err}`);
    process.exit(1);
  }
  console.error(`kinesalite listening on http://127.0.0.1:${port}`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}

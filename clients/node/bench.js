#!/usr/bin/env node
// Benchmark (not a test): how many records per second one Node process hands to a running kpld
// with a result for every record. Prints wall-clock records/s (bounded by the daemon and its
// Kinesis endpoint as much as by this client) and this process's CPU time per record (the
// client's own cost).
//
// Usage: node bench.js [--socket PATH] [--stream NAME] [--records N] [--size BYTES]
//                      [--batch N] [--window N] [--keys N]
//                      [--mode putRecords|putBatch|putRecord|send]
//                      [--create-stream --endpoint URL [--shards N]]
//   --socket    kpld's socket (default $KPLD_SOCKET, else /run/kpld/kpld.sock)
//   --stream    stream to put into (default kpld-bench); must exist unless --create-stream
//   --records   records to put (default 500000)
//   --size      data bytes per record (default 100)
//   --batch     records per putRecords call (default 500)
//   --window    most records outstanding at once (default 100000)
//   --keys      distinct partition keys, taken in turn (default 100000)
//   --mode      putRecords (settled results per batch, default), putBatch (one RecordBatch per
//               call, every record's outcome checked), putRecord (one promise per record) or
//               send (fire-and-forget; results only counted)
//   --create-stream  create the stream first with @aws-sdk/client-kinesis (a devDependency)
//               at --endpoint (e.g. http://127.0.0.1:4568), region us-east-1, credentials
//               test/test, --shards shards (default 4)
//
// kinesalite tops out near 55,000 records/s; to measure the client rather than the local
// Kinesis server, point kpld at the project's Kinesis double (`kpld-bench serve-fake`, built
// with `cargo build --release`), which creates the stream itself.
'use strict';

const { Producer } = require('./index.js');

function parseArgs(argv) {
  const o = {
    socket: undefined,
    stream: 'kpld-bench',
    records: 500000,
    size: 100,
    batch: 500,
    window: 100000,
    mode: 'putRecords',
    keys: 100000,
    createStream: false,
    endpoint: process.env.KPLD_TEST_KINESIS_ENDPOINT,
    shards: 4,
  };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--socket': o.socket = next(); break;
      case '--stream': o.stream = next(); break;
      case '--records': o.records = Number(next()); break;
      case '--size': o.size = Number(next()); break;
      case '--batch': o.batch = Number(next()); break;
      case '--window': o.window = Number(next()); break;
      case '--mode': o.mode = next(); break;
      case '--keys': o.keys = Number(next()); break;
      case '--create-stream': o.createStream = true; break;
      case '--endpoint': o.endpoint = next(); break;
      case '--shards': o.shards = Number(next()); break;
      default: throw new Error(`unknown argument ${a} (see the header of bench.js)`);
    }
  }
  if (!['putRecords', 'putBatch', 'putRecord', 'send'].includes(o.mode)) throw new Error(`unknown --mode ${o.mode}`);
  return o;
}

async function createStream(o) {
  if (!o.endpoint) throw new Error('--create-stream needs --endpoint (or KPLD_TEST_KINESIS_ENDPOINT)');
  const k = require('@aws-sdk/client-kinesis');
  const { NodeHttpHandler } = require('@smithy/node-http-handler'); // local servers: HTTP/1.1
  const client = new k.KinesisClient({
    region: 'us-east-1',
    endpoint: o.endpoint,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    requestHandler: new NodeHttpHandler(),
  });
  try {
    await client.send(new k.CreateStreamCommand({ StreamName: o.stream, ShardCount: o.shards }));
  } catch (e) {
    if (e.name !== 'ResourceInUseException') throw e;
  }
  await k.waitUntilStreamExists({ client, maxWaitTime: 60 }, { StreamName: o.stream });
  client.destroy();
}

function makeRecords(o, n, base) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) {
    const data = Buffer.alloc(o.size, (base + i) & 0xff);
    out[i] = { partitionKey: `pk-${(base + i) % o.keys}`, data };
  }
  return out;
}

async function main() {
  const o = parseArgs(process.argv);
  if (o.createStream) await createStream(o);
  const p = new Producer({ socketPath: o.socket });
  p.on('error', (e) => console.error(`connection error: ${e.message}`));

  // Pre-built record objects, reused round robin: the benchmark measures putting, not building.
  const pool = [];
  for (let k = 0; k < 8; k++) pool.push(makeRecords(o, o.batch, k * o.batch));

  // Warm up: connect, and let the daemon learn the shard map.
  await p.putRecords(o.stream, pool[0].slice(0, 10));

  let ok = 0;
  let failed = 0;
  const codes = new Map();
  const noteFailure = (err) => {
    failed++;
    codes.set(err.code, (codes.get(err.code) || 0) + 1);
  };
  const inflight = new Set();
  let outstanding = 0;
  let waiters = [];
  const release = (n) => {
    outstanding -= n;
    if (outstanding <= o.window - o.batch && waiters.length > 0) {
      const w = waiters;
      waiters = [];
      for (const f of w) f();
    }
  };
  const room = () => (outstanding + o.batch <= o.window ? null : new Promise((r) => waiters.push(r)));

  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let sent = 0;
  let k = 0;
  while (sent < o.records) {
    const n = Math.min(o.batch, o.records - sent);
    const recs = n === o.batch ? pool[k++ % pool.length] : pool[0].slice(0, n);
    const wait = room();
    if (wait !== null) await wait;
    outstanding += n;
    if (o.mode === 'putRecords') {
      const pr = p.putRecords(o.stream, recs).then((rs) => {
        for (let i = 0; i < rs.length; i++) {
          if (rs[i].status === 'fulfilled') ok++;
          else noteFailure(rs[i].reason);
        }
        release(rs.length);
        inflight.delete(pr);
      });
      inflight.add(pr);
    } else if (o.mode === 'putBatch') {
      const pr = p.putBatch(o.stream, recs).then((rb) => {
        ok += rb.succeeded;
        for (const [, err] of rb.failures()) noteFailure(err);
        release(rb.length);
        inflight.delete(pr);
      });
      inflight.add(pr);
    } else if (o.mode === 'putRecord') {
      for (let i = 0; i < n; i++) {
        const r = recs[i];
        p.putRecord({ stream: o.stream, partitionKey: r.partitionKey, data: r.data }).then(
          () => {
            ok++;
            release(1);
          },
          (e) => {
            noteFailure(e);
            release(1);
          },
        );
      }
    } else {
      p.send(o.stream, recs);
      outstanding -= n; // send() has no per-record completion; flush() below waits for all
      if (sent % (o.window / 2) < o.batch) await p.flush();
    }
    sent += n;
  }
  await Promise.all(inflight);
  await p.flush();
  const t1 = process.hrtime.bigint();
  const cpu = process.cpuUsage(cpu0);
  if (o.mode === 'send') {
    ok = p.counters.succeeded - 10;
    failed = p.counters.failed;
  }
  const secs = Number(t1 - t0) / 1e9;
  const cpuUs = cpu.user + cpu.system;
  console.log(`mode ${o.mode}, ${o.records} records of ${o.size} bytes, batch ${o.batch}, window ${o.window}`);
  console.log(`  wall time       ${secs.toFixed(3)} s`);
  console.log(`  records/s       ${Math.round(o.records / secs)}`);
  console.log(`  client CPU      ${(cpuUs / 1e6).toFixed(3)} s = ${(cpuUs / o.records).toFixed(2)} us/record (user ${(cpu.user / 1e6).toFixed(3)} s, system ${(cpu.system / 1e6).toFixed(3)} s)`);
  console.log(`  CPU-bound rate  ${Math.round(o.records / (cpuUs / 1e6))} records/s if the daemon kept up`);
  console.log(`  succeeded ${ok}, failed ${failed}${codes.size ? ' ' + JSON.stringify(Object.fromEntries(codes)) : ''}`);
  await p.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

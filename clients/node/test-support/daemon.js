// Test helpers: run the real kpld binary (KPLD_BIN) on a socket in a temp dir against a real
// Kinesis-compatible server (KPLD_TEST_KINESIS_ENDPOINT), and read streams back with
// @aws-sdk/client-kinesis and aws-kinesis-agg.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { setTimeout: sleep } = require('node:timers/promises');

const KPLD_BIN = process.env.KPLD_BIN;
const ENDPOINT = process.env.KPLD_TEST_KINESIS_ENDPOINT;
const SKIP_REASON =
  KPLD_BIN && ENDPOINT ? false : 'set KPLD_BIN (the kpld binary) and KPLD_TEST_KINESIS_ENDPOINT (a running kinesalite) to run';
// Under CI the integration tests must run: a missing prerequisite fails the suite instead of
// skipping it.
if (SKIP_REASON && ['1', 'true', 'yes'].includes(String(process.env.CI).toLowerCase())) {
  throw new Error(`prerequisite missing under CI: ${SKIP_REASON}`);
}

// Bounds that keep a broken daemon from hanging the suite; they assert nothing.
const READY_DEADLINE_MS = 30000;
const EXIT_DEADLINE_MS = 30000;

function tempDir(prefix = 'kpld-node-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A TOML config for kpld; `extra` adds or overrides keys (numbers, booleans, strings). */
function writeConfig(dir, socketPath, extra = {}) {
  const settings = {
    socket_path: socketPath,
    region: 'us-east-1',
    kinesis_endpoint: ENDPOINT,
    metrics_level: 'none',
    record_max_buffered_time_ms: 100,
    record_ttl_ms: 30000,
    shutdown_grace_ms: 5000,
    ...extra,
  };
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : v}`);
  const file = path.join(dir, `kpld-${Date.now()}-${Math.random().toString(16).slice(2)}.toml`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

function canConnect(socketPath) {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: socketPath });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts kpld with a config in `dir` and waits until its socket accepts connections.
 * Returns { proc, socketPath, configFile, stderr(), stop(signal) }.
 */
async function startDaemon({ dir, socketPath, config = {} }) {
  const configFile = writeConfig(dir, socketPath, config);
  const proc = spawn(KPLD_BIN, ['--config', configFile], {
    env: { ...process.env, AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    if (process.env.KPLD_TEST_VERBOSE) process.stderr.write(d);
    log += d;
    if (log.length > 200000) log = log.slice(-100000);
  });
  let exited = null;
  const exit = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  const d = {
    proc,
    socketPath,
    configFile,
    exit,
    stderr: () => log,
    async stop(signal = 'SIGTERM') {
      if (exited === null) proc.kill(signal);
      return waitExit(d);
    },
  };
  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    if (exited !== null) {
      throw new Error(`kpld exited before its socket was ready (${JSON.stringify(exited)}); stderr:\n${log}`);
    }
    if (await canConnect(socketPath)) return d;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`kpld socket ${socketPath} not ready after ${READY_DEADLINE_MS} ms; stderr:\n${log}`);
    }
    await sleep(50);
  }
}

async function waitExit(d) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`kpld did not exit; stderr:\n${d.stderr()}`)), EXIT_DEADLINE_MS);
  });
  try {
    return await Promise.race([d.exit, guard]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves or rejects as `promise` does, or rejects with `message` after `ms`: turns a hang into
 * a readable failure. Not a timing assertion; keep `ms` far above any expected duration.
 */
async function within(promise, ms, message) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} (waited ${ms} ms)`)), ms);
  });
  try {
    return await Promise.race([promise, guard]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `node -e script` with env; resolves to { code, signal, stdout, stderr } when it exits. */
function runNode(script, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

// --- Kinesis ---------------------------------------------------------------------------------

function kinesisClient() {
  const { KinesisClient } = require('@aws-sdk/client-kinesis');
  // The Kinesis client speaks HTTP/2 by default (for SubscribeToShard); local servers speak
  // HTTP/1.1.
  const { NodeHttpHandler } = require('@smithy/node-http-handler');
  return new KinesisClient({
    region: 'us-east-1',
    endpoint: ENDPOINT,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    requestHandler: new NodeHttpHandler(),
  });
}

async function createStream(client, name, shards) {
  const k = require('@aws-sdk/client-kinesis');
  await client.send(new k.CreateStreamCommand({ StreamName: name, ShardCount: shards }));
  await k.waitUntilStreamExists({ client, maxWaitTime: 60, minDelay: 1 }, { StreamName: name });
}

async function listShards(client, name) {
  const { ListShardsCommand } = require('@aws-sdk/client-kinesis');
  const shards = [];
  let token;
  do {
    const out = await client.send(new ListShardsCommand(token ? { NextToken: token } : { StreamName: name }));
    shards.push(...out.Shards);
    token = out.NextToken;
  } while (token);
  return shards;
}

/** The shard whose hash key range holds `hashKey` (a decimal string). */
function shardForHashKey(shards, hashKey) {
  const h = BigInt(hashKey);
  return shards.find((s) => BigInt(s.HashKeyRange.StartingHashKey) <= h && h <= BigInt(s.HashKeyRange.EndingHashKey));
}

/**
 * Reads every shard of a stream from the start and deaggregates with aws-kinesis-agg.
 * Returns Map shardId -> array of { partitionKey, explicitHashKey, sequenceNumber,
 * subSequenceNumber (0 for a record sent alone), data (Buffer), aggregated }.
 */
async function readStream(client, name) {
  const k = require('@aws-sdk/client-kinesis');
  const agg = require('aws-kinesis-agg');
  const out = new Map();
  for (const shard of await listShards(client, name)) {
    const users = [];
    out.set(shard.ShardId, users);
    let { ShardIterator: it } = await client.send(
      new k.GetShardIteratorCommand({ StreamName: name, ShardId: shard.ShardId, ShardIteratorType: 'TRIM_HORIZON' }),
    );
    while (it) {
      const res = await client.send(new k.GetRecordsCommand({ ShardIterator: it, Limit: 10000 }));
      for (const r of res.Records) {
        const kinesisRecord = {
          partitionKey: r.PartitionKey,
          sequenceNumber: r.SequenceNumber,
          data: Buffer.from(r.Data).toString('base64'),
        };
        const aggregated = Buffer.from(r.Data).subarray(0, 4).toString('hex') === 'f3899ac2';
        agg.deaggregateSync(kinesisRecord, true, (err, records) => {
          if (err) throw err;
          for (const u of records) {
            users.push({
              partitionKey: u.partitionKey,
              explicitHashKey: u.explicitPartitionKey,
              sequenceNumber: u.sequenceNumber,
              subSequenceNumber: u.subSequenceNumber ?? 0,
              data: Buffer.from(u.data, 'base64'),
              aggregated,
            });
          }
        });
      }
      if (res.Records.length === 0) break; // caught up: everything put before is read
      it = res.NextShardIterator;
    }
  }
  return out;
}

module.exports = {
  KPLD_BIN,
  ENDPOINT,
  SKIP_REASON,
  tempDir,
  startDaemon,
  within,
  runNode,
  kinesisClient,
  createStream,
  listShards,
  shardForHashKey,
  readStream,
};

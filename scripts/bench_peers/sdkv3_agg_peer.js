#!/usr/bin/env node
// AWS SDK for JavaScript v3 PutRecordsCommand with npm aws-kinesis-agg aggregation, sending
// kpld-bench's workload the way a hand-rolled Node producer does (the Node twin of
// boto3_agg_peer.py): one aggregator cut at 51,200 bytes (the KPL's default aggregate size),
// PutRecords calls of up to 500 entries or 5 MiB, one at a time, failed entries sent again until
// they succeed. The SDK talks HTTP/1.1 (NodeHttpHandler): local servers do not speak HTTP/2.
// Prints the figures in common.py's `name: value` form.
//
// Usage: node scripts/bench_peers/sdkv3_agg_peer.js --endpoint URL --stream NAME --records N
//          --record-size BYTES --keys N
// Resolves @aws-sdk/client-kinesis and aws-kinesis-agg from clients/node (its devDependencies).
'use strict';

const path = require('node:path');
const from = path.resolve(__dirname, '../../clients/node');
const need = (m) => require(require.resolve(m, { paths: [from] }));
const { KinesisClient, PutRecordsCommand } = need('@aws-sdk/client-kinesis');
const { NodeHttpHandler } = need('@smithy/node-http-handler');
const { RecordAggregator } = need('aws-kinesis-agg');
const aggVersion = need('aws-kinesis-agg/package.json').version;
const sdkVersion = need('@aws-sdk/client-kinesis/package.json').version;

const MAX_ENTRIES = 500;
const MAX_BYTES = 5 * 1024 * 1024;
const AGGREGATE_BYTES = 51200;
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

function parseArgs() {
  const o = { endpoint: null, stream: 'bench', records: 100000, recordSize: 100, keys: 1000 };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const v = a[++i];
    switch (a[i - 1]) {
      case '--endpoint': o.endpoint = v; break;
      case '--stream': o.stream = v; break;
      case '--records': o.records = Number(v); break;
      case '--record-size': o.recordSize = Number(v); break;
      case '--keys': o.keys = Number(v); break;
      default: throw new Error(`unknown argument ${a[i - 1]}`);
    }
  }
  if (!o.endpoint) throw new Error('--endpoint is required');
  return o;
}

async function main() {
  const o = parseArgs();
  const keys = [];
  for (let i = 0; i < Math.max(o.keys, 1); i++) keys.push(`partition-key-${String(i).padStart(6, '0')}`);
  const data = Buffer.alloc(o.recordSize);
  for (let i = 0; i < o.recordSize; i++) data[i] = ALPHABET.charCodeAt(i % 36);
  const client = new KinesisClient({
    region: 'us-east-1',
    endpoint: o.endpoint,
    credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
    requestHandler: new NodeHttpHandler(),
    maxAttempts: 1,
  });
  let calls = 0;
  let retried = 0;
  let succeeded = 0;
  async function send(entries) {
    // entries: [{ entry, n }]
    while (entries.length > 0) {
      calls++;
      const res = await client.send(new PutRecordsCommand({ StreamName: o.stream, Records: entries.map((e) => e.entry) }));
      const again = [];
      res.Records.forEach((r, i) => {
        if (r.ErrorCode) again.push(entries[i]);
        else succeeded += entries[i].n;
      });
      retried += again.length;
      entries = again;
    }
  }
  function entryOf(agg) {
    const n = agg.length();
    const built = agg.build();
    const entry = { Data: built.data, PartitionKey: built.partitionKey };
    if (built.ExplicitHashKey) entry.ExplicitHashKey = built.ExplicitHashKey;
    return { entry, n };
  }
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const agg = new RecordAggregator();
  let batch = [];
  let batchBytes = 0;
  const add = async (e) => {
    const size = e.entry.Data.length + e.entry.PartitionKey.length;
    if (batch.length === MAX_ENTRIES || batchBytes + size > MAX_BYTES) {
      await send(batch);
      batch = [];
      batchBytes = 0;
    }
    batch.push(e);
    batchBytes += size;
  };
  for (let i = 0; i < o.records; i++) {
    agg.addUserRecord({ partitionKey: keys[i % keys.length], data });
    if (agg.totalBytes >= AGGREGATE_BYTES) await add(entryOf(agg));
  }
  if (agg.length() > 0) await add(entryOf(agg));
  if (batch.length > 0) await send(batch);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  console.log(`# AWS SDK v3 ${sdkVersion} PutRecordsCommand + aws-kinesis-agg ${aggVersion}: ${o.recordSize}-byte records, ${o.keys} keys, stream ${o.stream}`);
  console.log(`records_sent: ${o.records}`);
  console.log(`records_succeeded: ${succeeded}`);
  console.log(`elapsed_s: ${wall.toFixed(3)}`);
  console.log(`throughput_records_per_s: ${Math.round(succeeded / wall)}`);
  console.log(`cpu_s: ${cpuS.toFixed(2)}`);
  console.log(`cpu_us_per_record: ${((cpuS * 1e6) / Math.max(succeeded, 1)).toFixed(1)}`);
  console.log(`peak_rss_mib: ${(process.resourceUsage().maxRSS / 1024).toFixed(1)}`);
  console.log(`put_records_calls: ${calls}`);
  console.log(`entries_retried: ${retried}`);
  client.destroy();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

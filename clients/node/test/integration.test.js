// Integration tests against the real kpld binary and a real Kinesis-compatible server.
// Run with KPLD_BIN=/path/to/kpld KPLD_TEST_KINESIS_ENDPOINT=http://127.0.0.1:4568 (a running
// kinesalite); skipped otherwise. Records are read back with GetRecords and deaggregated with
// the npm aws-kinesis-agg package.
'use strict';

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { once } = require('node:events');
const h = require('../test-support/daemon');
const { Producer, Sent, ConnectionError, RecordFailedError, BusyError, KpldError } = require('..');

const PKG_DIR = path.resolve(__dirname, '..');
const RUN = `${process.pid}-${Date.now().toString(36)}`;
// Hang guards for the test runner; no assertion depends on them.
const LONG = { timeout: 180000 };

function randomData(i) {
  // Sizes from 1 byte to ~3 KB, bytes that are not valid UTF-8.
  const n = 1 + ((i * 7919) % 3000);
  return crypto.randomBytes(n);
}

describe('kpld integration', { skip: h.SKIP_REASON }, () => {
  let dir;
  let kinesis;
  let daemon; // record_max_buffered_time_ms 100: records go out by themselves
  const stream = `kpld-node-it-${RUN}`;
  let shards;

  before(async () => {
    dir = h.tempDir();
    kinesis = h.kinesisClient();
    await h.createStream(kinesis, stream, 4);
    shards = await h.listShards(kinesis, stream);
    daemon = await h.startDaemon({ dir, socketPath: path.join(dir, 'kpld.sock') });
  });

  after(async () => {
    if (daemon) await daemon.stop('SIGTERM');
    if (kinesis) kinesis.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('every record arrives with its key and data on the shard its result named', LONG, async () => {
    const p = new Producer({ socketPath: daemon.socketPath });
    const put = []; // { partitionKey, data (Buffer), explicitHashKey?, result }

    // A batch through putRecords (one PutRequest frame).
    const batch = [];
    for (let i = 0; i < 1500; i++) batch.push({ partitionKey: `key-${i % 700}`, data: randomData(i) });
    const batchPromise = p.putRecords(stream, batch);

    // Single records with string and Uint8Array data, put in the same tick.
    const singles = [];
    for (let i = 0; i < 100; i++) {
      const rec = { stream, partitionKey: `single-${i}-ключ`, data: i % 2 ? `text record ${i} ✓` : new Uint8Array(randomData(i + 5000)) };
      singles.push({ rec, promise: p.putRecord(rec) });
    }

    // Explicit hash keys: the lowest and highest hash key, and the middle of every shard.
    const ehks = ['0', (2n ** 128n - 1n).toString()];
    for (const s of shards) {
      ehks.push(((BigInt(s.HashKeyRange.StartingHashKey) + BigInt(s.HashKeyRange.EndingHashKey)) / 2n).toString());
    }
    const ehkRecords = ehks.map((e, i) => ({ partitionKey: `ehk-${i}`, explicitHashKey: e, data: Buffer.from(`routed by ${e}`) }));
    const ehkPromise = p.putRecords(stream, ehkRecords);

    const batchResults = await batchPromise;
    batchResults.forEach((r, i) => {
      assert.equal(r.status, 'fulfilled', `batch record ${i}: ${r.reason && r.reason.message}`);
      put.push({ partitionKey: batch[i].partitionKey, data: batch[i].data, result: r.value });
    });
    for (const { rec, promise } of singles) {
      put.push({ partitionKey: rec.partitionKey, data: Buffer.from(rec.data), result: await promise });
    }
    const ehkResults = await ehkPromise;
    ehkResults.forEach((r, i) => {
      assert.equal(r.status, 'fulfilled', `ehk record ${i}: ${r.reason && r.reason.message}`);
      const expected = h.shardForHashKey(shards, ehkRecords[i].explicitHashKey);
      assert.equal(r.value.shardId, expected.ShardId, `explicit hash key ${ehkRecords[i].explicitHashKey} routes to its shard`);
      put.push({ ...ehkRecords[i], result: r.value });
    });
    await p.close();

    for (const { result } of put) {
      assert.match(result.shardId, /^shardId-\d+$/);
      assert.match(result.sequenceNumber, /^\d+$/);
      assert.equal(typeof result.subSequenceNumber, 'number');
      assert.ok(result.attempts.length >= 1, 'a delivered record lists its attempts');
      const last = result.attempts[result.attempts.length - 1];
      assert.equal(last.success, true);
      assert.equal(typeof last.delayMs, 'number');
      assert.equal(typeof last.durationMs, 'number');
    }

    // Read everything back and find each record where its result says it is.
    const read = await h.readStream(kinesis, stream);
    const where = new Map(); // "shard seq sub" -> user record
    let total = 0;
    for (const [shardId, users] of read) {
      for (const u of users) {
        where.set(`${shardId} ${u.sequenceNumber} ${u.subSequenceNumber}`, u);
        total++;
      }
    }
    for (const rec of put) {
      const key = `${rec.result.shardId} ${rec.result.sequenceNumber} ${rec.result.subSequenceNumber}`;
      const u = where.get(key);
      assert.ok(u, `record ${rec.partitionKey} found on ${key}`);
      assert.equal(u.partitionKey, rec.partitionKey);
      assert.equal(u.data.equals(Buffer.from(rec.data)), true, `data of ${rec.partitionKey}`);
      if (rec.explicitHashKey !== undefined && u.aggregated) assert.equal(u.explicitHashKey, rec.explicitHashKey);
    }
    assert.equal(total, put.length, 'no record is delivered twice or unasked');
    assert.ok(
      [...read.values()].some((users) => users.some((u) => u.aggregated)),
      'records put together were KPL-aggregated',
    );
  });

  it('a record with an empty partition key fails with InvalidPartitionKey and no attempts', LONG, async () => {
    const p = new Producer({ socketPath: daemon.socketPath });
    await assert.rejects(p.putRecord({ stream, partitionKey: '', data: 'x' }), (err) => {
      assert.ok(err instanceof RecordFailedError);
      assert.ok(err instanceof KpldError);
      assert.equal(err.code, 'InvalidPartitionKey');
      assert.deepEqual(err.attempts, []);
      return true;
    });
    const rs = await p.putRecords(stream, [
      { partitionKey: 'fine', data: 'a' },
      { partitionKey: '', data: 'b' },
      { partitionKey: 'k'.repeat(257), data: 'c' },
      { partitionKey: 'also fine', data: 'd' },
    ]);
    assert.deepEqual(
      rs.map((r) => r.status),
      ['fulfilled', 'rejected', 'rejected', 'fulfilled'],
    );
    assert.equal(rs[1].reason.code, 'InvalidPartitionKey');
    assert.equal(rs[2].reason.code, 'InvalidPartitionKey');
    assert.equal(p.counters.failed, 3);
    await p.close();
  });

  it('putBatch: one RecordBatch with every result, failures by index, records read back', LONG, async () => {
    const p = new Producer({ socketPath: daemon.socketPath });
    const records = [];
    for (let i = 0; i < 2000; i++) records.push({ partitionKey: `batch-${i % 50}`, data: Buffer.from(`batch record ${i}`) });
    records[7] = { partitionKey: '', data: 'no key' };
    const [rb, settled] = await Promise.all([p.putBatch(stream, records), p.putRecords(stream, records.slice(0, 3))]);
    assert.equal(rb.length, 2000);
    assert.equal(rb.succeeded, 1999);
    assert.equal(rb.failed, 1);
    assert.equal(rb.error(7).code, 'InvalidPartitionKey');
    assert.throws(() => rb.result(7), RecordFailedError);
    assert.deepEqual(rb.failures().map(([i]) => i), [7]);
    assert.equal(rb.error(0), null);
    assert.throws(() => rb.result(2000), RangeError);
    assert.deepEqual(rb.settled()[7], { status: 'rejected', reason: rb.error(7) });
    assert.deepEqual(settled.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled']);
    const empty = await p.putBatch(stream, []);
    assert.equal(empty.length, 0);
    await p.close();
    const read = await h.readStream(kinesis, stream);
    for (const i of [0, 1, 999, 1999]) {
      const v = rb.result(i);
      assert.ok(shards.some((s) => s.ShardId === v.shardId), v.shardId);
      const u = read.get(v.shardId).find((x) => x.sequenceNumber === v.sequenceNumber && x.subSequenceNumber === v.subSequenceNumber);
      assert.equal(u.partitionKey, records[i].partitionKey);
      assert.equal(Buffer.from(u.data).toString(), `batch record ${i}`);
    }
  });

  it('records for a stream that does not exist fail with the code Kinesis gave', LONG, async () => {
    const p = new Producer({ socketPath: daemon.socketPath });
    await assert.rejects(p.putRecord({ stream: `no-such-stream-${RUN}`, partitionKey: 'k', data: 'x' }), (err) => {
      assert.ok(err instanceof RecordFailedError);
      assert.equal(err.code, 'ResourceNotFoundException');
      return true;
    });
    await p.close();
  });

  it('per-record compression: consumers read gzip or zlib of the data, as asked', LONG, async () => {
    const zlib = require('node:zlib');
    const p = new Producer({ socketPath: daemon.socketPath });
    const text = 'compress me, '.repeat(200);
    const rs = await p.putRecords(stream, [
      { partitionKey: 'gz', data: text, compression: 'gzip' },
      { partitionKey: 'zl', data: Buffer.from(text), compression: 'zlib' },
      { partitionKey: 'plain', data: text, compression: 'none' },
    ]);
    await p.close();
    for (const r of rs) assert.equal(r.status, 'fulfilled', r.reason && r.reason.message);
    const read = await h.readStream(kinesis, stream);
    const find = (v) => read.get(v.shardId).find((u) => u.sequenceNumber === v.sequenceNumber && u.subSequenceNumber === v.subSequenceNumber);
    const [gz, zl, plain] = rs.map((r) => find(r.value));
    assert.equal(zlib.gunzipSync(gz.data).toString(), text);
    assert.equal(zlib.inflateSync(zl.data).toString(), text);
    assert.equal(plain.data.toString(), text);
  });

  it('per-record compression overrides a stream that compresses: none and zlib win over gzip', LONG, async (t) => {
    const zlib = require('node:zlib');
    const gzDir = h.tempDir();
    const socketPath = path.join(gzDir, 'kpld.sock');
    const d = await h.startDaemon({ dir: gzDir, socketPath, config: { compression: 'gzip' } });
    const p = new Producer({ socketPath });
    t.after(async () => {
      p.destroy();
      await d.stop('SIGTERM');
      fs.rmSync(gzDir, { recursive: true, force: true });
    });
    const text = 'compress me, '.repeat(200);
    const rs = await p.putRecords(stream, [
      { partitionKey: 'over-none', data: text, compression: 'none' },
      { partitionKey: 'over-zlib', data: text, compression: 'zlib' },
      { partitionKey: 'over-default', data: text },
    ]);
    for (const r of rs) assert.equal(r.status, 'fulfilled', r.reason && r.reason.message);
    const read = await h.readStream(kinesis, stream);
    const find = (v) => read.get(v.shardId).find((u) => u.sequenceNumber === v.sequenceNumber && u.subSequenceNumber === v.subSequenceNumber);
    const [none, zl, dflt] = rs.map((r) => find(r.value));
    assert.equal(none.data.toString(), text);
    assert.equal(zlib.inflateSync(zl.data).toString(), text);
    assert.equal(zlib.gunzipSync(dflt.data).toString(), text);
  });

  it('send(): results only count, and a failed record is emitted as recordFailed', LONG, async () => {
    const p = new Producer({ socketPath: daemon.socketPath });
    const failures = [];
    p.on('recordFailed', (err, record, s) => failures.push({ err, record, stream: s }));
    const bad = { partitionKey: '', data: 'no key' };
    const records = [{ partitionKey: 'fire-1', data: 'a' }, bad, { partitionKey: 'fire-2', data: Buffer.from('b') }];
    const sent = p.send(stream, records);
    assert.ok(sent instanceof Sent);
    assert.equal(p.outstanding, 3);
    await p.flush();
    assert.deepEqual(p.counters, { put: 3, succeeded: 2, failed: 1 });
    assert.equal(failures.length, 1);
    assert.ok(failures[0].err instanceof RecordFailedError);
    assert.equal(failures[0].err.code, 'InvalidPartitionKey');
    assert.equal(failures[0].record, bad);
    assert.equal(failures[0].stream, stream);
    await p.close();
  });

  it('with busyIfFull, a put while the daemon is full fails at once with BusyError', LONG, async (t) => {
    const busyDir = h.tempDir();
    const socketPath = path.join(busyDir, 'kpld.sock');
    // Room for 5 records, held for 600 s.
    const d = await h.startDaemon({
      dir: busyDir,
      socketPath,
      config: { record_max_buffered_time_ms: 600000, record_ttl_ms: 1200000, max_outstanding_records: 5 },
    });
    const p = new Producer({ socketPath, busyIfFull: true });
    t.after(async () => {
      p.destroy();
      await d.stop('SIGKILL');
      fs.rmSync(busyDir, { recursive: true, force: true });
    });
    const held = p.putRecords(stream, [1, 2, 3, 4, 5].map((i) => ({ partitionKey: `held-${i}`, data: 'x' })));
    await new Promise((resolve) => setImmediate(resolve)); // the next put goes in a frame of its own
    await assert.rejects(p.putRecord({ stream, partitionKey: 'one-too-many', data: 'y' }), (err) => {
      assert.ok(err instanceof BusyError, String(err));
      assert.ok(err instanceof RecordFailedError);
      assert.equal(err.code, 'Busy');
      assert.deepEqual(err.attempts, []);
      return true;
    });
    assert.equal(p.outstanding, 5);
    p.destroy();
    assert.ok((await held).every((r) => r.status === 'rejected' && r.reason.code === 'Closed'));
  });

  describe('with records held in the daemon until flushed', () => {
    let slowDir;
    let d2; // first with record_max_buffered_time_ms far beyond the test: only flush() sends
    let socketPath;
    const holdConfig = { record_max_buffered_time_ms: 600000, record_ttl_ms: 1200000 };

    before(async () => {
      slowDir = h.tempDir();
      socketPath = path.join(slowDir, 'kpld.sock');
      d2 = await h.startDaemon({ dir: slowDir, socketPath, config: holdConfig });
    });

    after(async () => {
      if (d2) await d2.stop('SIGKILL');
      fs.rmSync(slowDir, { recursive: true, force: true });
    });

    it('flush() resolves once every record put before it has its result', LONG, async (t) => {
      const p = new Producer({ socketPath });
      t.after(() => p.destroy()); // on failure, leave nothing pending for the next test
      let settled = 0;
      const outcomes = [];
      for (let i = 0; i < 50; i++) {
        const pr = p.putRecord({ stream, partitionKey: `flush-${i}`, data: `flush ${i}` });
        outcomes.push(pr.then((r) => r.shardId, (e) => e).finally(() => settled++));
      }
      const batch = p.putRecords(stream, [{ partitionKey: 'flush-batch', data: 'b' }]).finally(() => settled++);
      // The daemon holds records for 600 s: only the flush sends them. The bound below only
      // turns a hang into a readable failure.
      await h.within(p.flush(), 60000, 'flush() not answered: the daemon did not send its buffered records on FlushRequest');
      // Promise callbacks queued by results run before flush's continuation.
      assert.equal(settled, 51);
      assert.equal(p.outstanding, 0);
      for (const r of await Promise.all(outcomes)) assert.match(r, /^shardId-/);
      assert.equal((await batch)[0].status, 'fulfilled');

      // Again, now that the daemon knows the stream's shards.
      const more = p.putRecords(stream, [{ partitionKey: 'flush-again', data: 'c' }]);
      await h.within(p.flush(), 60000, 'second flush() not answered');
      assert.equal((await more)[0].status, 'fulfilled');
      await p.flush(); // nothing outstanding: resolves at once
      await p.close();
    });

    it('losing the daemon fails records in flight with ConnectionError and emits error; later puts reconnect', LONG, async () => {
      const p = new Producer({ socketPath });
      const errors = [];
      p.on('error', (e) => errors.push(e));
      const connected = once(p, 'connect');
      // Held by the daemon (no flush): in flight when it dies.
      const inFlight = p.putRecord({ stream, partitionKey: 'in-flight', data: 'y' });
      const settledBatch = p.putRecords(stream, [{ partitionKey: 'in-flight-batch', data: 'z' }]);
      await connected;
      assert.equal(p.connected, true);
      assert.equal(p.outstanding, 2);

      const errorEvent = once(p, 'error');
      const inFlightOutcome = inFlight.then(
        (r) => assert.fail(`a record put to a killed daemon succeeded: ${JSON.stringify(r)}`),
        (err) => err,
      );
      await d2.stop('SIGKILL');
      const err = await inFlightOutcome;
      assert.ok(err instanceof ConnectionError, String(err));
      assert.equal(err.code, 'ConnectionError');
      const [batchResult] = await settledBatch;
      assert.equal(batchResult.status, 'rejected');
      assert.ok(batchResult.reason instanceof ConnectionError);
      const [event] = await errorEvent;
      assert.ok(event instanceof ConnectionError);
      assert.equal(p.connected, false);
      assert.equal(p.outstanding, 0);

      // No daemon: the next put fails to connect.
      await assert.rejects(p.putRecord({ stream, partitionKey: 'no-daemon', data: 'x' }), ConnectionError);

      // A new daemon on the same socket path (records sent after 100 ms): puts reconnect.
      d2 = await h.startDaemon({ dir: slowDir, socketPath });
      const r = await p.putRecord({ stream, partitionKey: 'after-restart', data: 'x' });
      assert.match(r.shardId, /^shardId-/);
      assert.equal(p.connected, true);
      assert.equal(errors.length, 2, 'error events: the lost connection, the failed connect');
      await p.close();
    });
  });

  describe('acceptance (accepted())', () => {
    let accDir;
    let d3; // holds records until flushed: accepted() must resolve without any result
    let socketPath;

    before(async () => {
      accDir = h.tempDir();
      socketPath = path.join(accDir, 'kpld.sock');
      d3 = await h.startDaemon({ dir: accDir, socketPath, config: { record_max_buffered_time_ms: 600000, record_ttl_ms: 1200000 } });
    });

    after(async () => {
      if (d3) await d3.stop('SIGKILL');
      fs.rmSync(accDir, { recursive: true, force: true });
    });

    it('accepted() resolves for every put method before the results, and the results still come', LONG, async (t) => {
      const p = new Producer({ socketPath });
      t.after(() => p.destroy());
      let results = 0;
      const single = p.putRecord({ stream, partitionKey: 'acc-single', data: 'a' });
      const settled = p.putRecords(stream, [{ partitionKey: 'acc-1', data: 'b' }, { partitionKey: 'acc-2', data: 'c' }]);
      const batch = p.putBatch(stream, [{ partitionKey: 'acc-3', data: 'd' }]);
      const sent = p.send(stream, [{ partitionKey: 'acc-4', data: 'e' }]);
      for (const pr of [single, settled, batch]) pr.then(() => results++, () => results++);
      await h.within(Promise.all([single.accepted(), settled.accepted(), batch.accepted(), sent.accepted()]), 60000, 'accepted() never resolved');
      // Held 600 s by the daemon: accepted, and no result yet.
      assert.equal(results, 0);
      assert.equal(p.outstanding, 5);
      await h.within(p.flush(), 60000, 'flush() not answered');
      assert.match((await single).shardId, /^shardId-/);
      assert.ok((await settled).every((r) => r.status === 'fulfilled'));
      assert.equal((await batch).succeeded, 1);
      await single.accepted(); // still resolves after the result
      assert.deepEqual(p.counters, { put: 5, succeeded: 5, failed: 0 });
      await p.close();
    });

    it('accepted() rejects with the refusal of an invalid record, naming its code', LONG, async (t) => {
      const p = new Producer({ socketPath });
      t.after(() => p.destroy());
      const empty = p.putRecord({ stream, partitionKey: '', data: 'x' });
      const emptyOutcome = empty.then(() => null, (e) => e);
      const badStream = p.putRecords('not a stream!', [{ partitionKey: 'k', data: 'x' }]);
      const mixed = p.putBatch(stream, [{ partitionKey: 'ok', data: '1' }, { partitionKey: '', data: '2' }]);
      const sent = p.send(stream, [{ partitionKey: '', data: '3' }]);
      const refusal = async (pr) => {
        const err = await pr.accepted().then(() => assert.fail('a refused record was accepted'), (e) => e);
        assert.ok(err instanceof RecordFailedError, String(err));
        assert.equal(err.refused, true);
        return err;
      };
      assert.equal((await refusal(empty)).code, 'InvalidPartitionKey');
      assert.match((await refusal(badStream)).code, /^Invalid/);
      assert.equal((await refusal(mixed)).code, 'InvalidPartitionKey');
      assert.equal((await refusal(sent)).code, 'InvalidPartitionKey');
      assert.equal(await emptyOutcome, await refusal(empty), 'accepted() rejects with the record\'s own error');
      await h.within(p.flush(), 60000, 'flush() not answered');
      const rb = await mixed;
      assert.equal(rb.succeeded, 1);
      assert.equal(rb.error(1).refused, true);
      await p.close();
    });

    it('accepted() rejects with ConnectionError when the daemon is killed before accepting', LONG, async () => {
      // Room for 10 records: the daemon takes 10 of the 30 and waits for room for the rest,
      // sending no Accepted for their frame; SIGKILL then ends the connection.
      const dir4 = h.tempDir();
      const sock4 = path.join(dir4, 'kpld.sock');
      const d4 = await h.startDaemon({ dir: dir4, socketPath: sock4, config: { max_outstanding_records: 10, record_max_buffered_time_ms: 600000 } });
      const p = new Producer({ socketPath: sock4 });
      try {
        const first = p.putRecord({ stream, partitionKey: 'first', data: 'x' });
        first.catch(() => undefined);
        await h.within(first.accepted(), 60000, 'first record never accepted');
        const waiting = p.putRecords(stream, Array.from({ length: 30 }, (_, i) => ({ partitionKey: `w${i}`, data: 'w' })));
        const sent = p.send(stream, [{ partitionKey: 'sent', data: 's' }]);
        await new Promise((r) => setImmediate(r)); // the frames leave
        await d4.stop('SIGKILL');
        await assert.rejects(waiting.accepted(), ConnectionError);
        await assert.rejects(sent.accepted(), ConnectionError);
        assert.ok((await waiting).every((r) => r.status === 'rejected' && r.reason instanceof ConnectionError));
        await first.accepted(); // accepted before the kill: stays accepted, though its result is lost
        await assert.rejects(first, ConnectionError);
      } finally {
        p.destroy();
        fs.rmSync(dir4, { recursive: true, force: true });
      }
    });
  });

  it('the process exits by itself after close()', LONG, async () => {
    const script = `
      const { Producer } = require(${JSON.stringify(PKG_DIR)});
      (async () => {
        const p = new Producer();
        const r = await p.putRecord({ stream: ${JSON.stringify(stream)}, partitionKey: 'child', data: 'from a child' });
        await p.putRecords(${JSON.stringify(stream)}, [{ partitionKey: 'child2', data: 'x' }]);
        await p.close();
        console.log('closed ' + r.shardId);
      })();`;
    const res = await h.runNode(script, { KPLD_SOCKET: daemon.socketPath });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^closed shardId-/);
  });

  it('a script that puts without awaiting or closing still gets its result, then exits', LONG, async () => {
    const script = `
      const { Producer } = require(${JSON.stringify(PKG_DIR)});
      const p = new Producer({ socketPath: ${JSON.stringify(daemon.socketPath)} });
      p.putRecord({ stream: ${JSON.stringify(stream)}, partitionKey: 'fire', data: 'x' })
        .then((r) => console.log('result ' + r.shardId), (e) => console.log('failed ' + e.code));
      p.send(${JSON.stringify(stream)}, [{ partitionKey: 'forget', data: 'y' }]);
      process.on('exit', () => console.log('counters ' + JSON.stringify(p.counters)));`;
    const res = await h.runNode(script);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /result shardId-/);
    assert.match(res.stdout, /counters \{"put":2,"succeeded":2,"failed":0\}/);
  });
});

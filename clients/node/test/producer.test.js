// Producer behaviour that needs no daemon: options, argument checks, a socket nobody listens
// on, closing, module formats and type declarations. Daemon-backed behaviour is in
// integration.test.js.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('../test-support/daemon');
const kpld = require('..');

const { Producer, ConnectionError, KpldError, RecordFailedError, BusyError, ProtocolError } = kpld;
const PKG_DIR = path.resolve(__dirname, '..');

function missingSocket() {
  return path.join(h.tempDir(), 'nobody-listens.sock');
}

test('socket path: option, else $KPLD_SOCKET, else /run/kpld/kpld.sock', () => {
  const saved = process.env.KPLD_SOCKET;
  try {
    delete process.env.KPLD_SOCKET;
    assert.equal(new Producer().socketPath, '/run/kpld/kpld.sock');
    process.env.KPLD_SOCKET = '/tmp/from-env.sock';
    assert.equal(new Producer().socketPath, '/tmp/from-env.sock');
    assert.equal(new Producer({ socketPath: '/tmp/explicit.sock' }).socketPath, '/tmp/explicit.sock');
  } finally {
    if (saved === undefined) delete process.env.KPLD_SOCKET;
    else process.env.KPLD_SOCKET = saved;
  }
});

test('error classes: one root, codes, BusyError is a RecordFailedError', () => {
  const busy = new BusyError('Busy', 'buffers full', []);
  assert.ok(busy instanceof RecordFailedError && busy instanceof KpldError && busy instanceof Error);
  assert.equal(busy.name, 'BusyError');
  assert.equal(busy.code, 'Busy');
  assert.equal(new ConnectionError('x').code, 'ConnectionError');
  assert.equal(new ProtocolError('x').name, 'ProtocolError');
  const failed = new RecordFailedError('Expired', '', [{ success: false }]);
  assert.equal(failed.message, 'Expired');
  assert.equal(failed.attempts.length, 1);
});

test('invalid arguments: TypeError, before anything is sent', async () => {
  const p = new Producer({ socketPath: missingSocket() });
  await assert.rejects(p.putRecord(null), TypeError);
  await assert.rejects(p.putRecord({ stream: 1, partitionKey: 'k', data: 'x' }), /stream must be a string/);
  await assert.rejects(p.putRecord({ stream: 's', partitionKey: 5, data: 'x' }), /partitionKey must be a string/);
  await assert.rejects(p.putRecord({ stream: 's', partitionKey: 'k', data: 5 }), /data must be a Buffer, Uint8Array or string/);
  await assert.rejects(p.putRecord({ stream: 's', partitionKey: 'k', data: 'x', explicitHashKey: 5 }), /explicitHashKey/);
  await assert.rejects(p.putRecords('s', 'not an array'), TypeError);
  await assert.rejects(p.putRecords('s', [{ partitionKey: 'k', data: 'x' }, { partitionKey: 'k' }]), /records\[1\]\.data/);
  assert.throws(() => p.send('s', [{ partitionKey: null, data: 'x' }]), TypeError);
  assert.deepEqual(await p.putRecords('s', []), []);
  assert.equal(p.outstanding, 0);
  assert.equal(p.counters.put, 0);
});

test('no daemon: puts reject with ConnectionError, the error event fires, the producer stays usable', async () => {
  const socketPath = missingSocket();
  const p = new Producer({ socketPath });
  const events = [];
  p.on('error', (e) => events.push(e));
  await assert.rejects(p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' }), (err) => {
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.code, 'ConnectionError');
    assert.match(err.message, /cannot connect to kpld at .*nobody-listens\.sock/);
    assert.match(err.message, /is kpld running\? set socketPath or \$KPLD_SOCKET/);
    assert.equal(err.cause.code, 'ENOENT');
    return true;
  });
  const rs = await p.putRecords('s', [
    { partitionKey: 'a', data: 'x' },
    { partitionKey: 'b', data: 'y' },
  ]);
  assert.deepEqual(
    rs.map((r) => [r.status, r.reason.code]),
    [
      ['rejected', 'ConnectionError'],
      ['rejected', 'ConnectionError'],
    ],
  );
  assert.equal(events.length, 2);
  assert.ok(events.every((e) => e instanceof ConnectionError));
  assert.deepEqual(p.counters, { put: 3, succeeded: 0, failed: 3 });
  assert.equal(p.outstanding, 0);
  // A flush with records in flight fails with them.
  const put = p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' });
  await assert.rejects(p.flush(), ConnectionError);
  await assert.rejects(put, ConnectionError);
  await p.close();
  fs.rmSync(path.dirname(socketPath), { recursive: true, force: true });
});

test('no error listener: a lost connection only rejects the promises', async () => {
  const p = new Producer({ socketPath: missingSocket() });
  await assert.rejects(p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' }), ConnectionError);
});

test('after close(): flush resolves, puts fail with code Closed', async () => {
  const p = new Producer({ socketPath: missingSocket() });
  await p.flush();
  await p.close();
  await p.close();
  await assert.rejects(p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' }), (e) => e instanceof ConnectionError && e.code === 'Closed');
  await assert.rejects(p.putRecords('s', [{ partitionKey: 'k', data: 'x' }]), (e) => e.code === 'Closed');
  assert.throws(() => p.send('s', [{ partitionKey: 'k', data: 'x' }]), (e) => e.code === 'Closed');
  await p.flush();
});

test('a process whose producer never reached a daemon exits by itself', () => {
  const script = `
    const { Producer } = require(${JSON.stringify(PKG_DIR)});
    const p = new Producer({ socketPath: ${JSON.stringify(missingSocket())} });
    p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' }).catch((e) => console.log('rejected ' + e.code));
    const idle = new Producer();
    console.log('started');`;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 });
  assert.equal(res.status, 0, res.stderr);
  assert.equal(res.stdout, 'started\nrejected ConnectionError\n');
});

test('ESM import gives the same classes, named and default', () => {
  const script = `
    import kpld, { Producer, ConnectionError, DEFAULT_SOCKET_PATH } from 'kpld';
    import { createRequire } from 'node:module';
    const cjs = createRequire(import.meta.url)('kpld');
    if (Producer !== cjs.Producer || kpld.ConnectionError !== ConnectionError) throw new Error('not the same classes');
    console.log(DEFAULT_SOCKET_PATH);`;
  // Resolve 'kpld' by name through the package's own exports map (self-reference).
  const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: PKG_DIR, encoding: 'utf8', timeout: 60000 });
  assert.equal(res.status, 0, res.stderr);
  assert.equal(res.stdout, '/run/kpld/kpld.sock\n');
});

test('type declarations compile against typical use (CommonJS and ESM)', (t) => {
  let tsc;
  try {
    tsc = require.resolve('typescript/bin/tsc');
  } catch {
    t.skip('typescript (a devDependency) is not installed');
    return;
  }
  const res = spawnSync(process.execPath, [tsc, '-p', path.join(__dirname, 'types', 'tsconfig.json')], {
    cwd: PKG_DIR,
    encoding: 'utf8',
    timeout: 120000,
  });
  assert.equal(res.status, 0, res.stdout + res.stderr);
});

test('destroy(): outstanding records fail with code Closed at once, without an error event', async () => {
  const p = new Producer({ socketPath: missingSocket() });
  let events = 0;
  p.on('error', () => events++);
  const put = p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' });
  const batch = p.putRecords('s', [{ partitionKey: 'k', data: 'x' }]);
  p.destroy();
  await assert.rejects(put, (e) => e instanceof ConnectionError && e.code === 'Closed');
  assert.equal((await batch)[0].reason.code, 'Closed');
  assert.equal(p.outstanding, 0);
  assert.equal(events, 0);
  await p.close();
  await assert.rejects(p.putRecord({ stream: 's', partitionKey: 'k', data: 'x' }), (e) => e.code === 'Closed');
});

test('accepted(): runs spanning calls, out of order, before or after results; refusals; a peer that closes', { timeout: 60000 }, async () => {
  // A scripted peer on a real Unix socket speaking the protocol (test-support/pb builds its
  // frames independently of the client's codec).
  const net = require('node:net');
  const pb = require('../test-support/pb');
  const { varint, vint, ld, frame } = pb;
  const sockPath = path.join(h.tempDir(), 'peer.sock');
  const hello = frame(ld(1, [vint(1, 1), ld(2, 'peer 1'), vint(3, 1 << 20), vint(4, 1000)]));
  const ok = (id) => ld(1, [vint(1, id), vint(2, 1), ld(3, 'shardId-000000000000'), ld(4, '1')]);
  const refused = (id) => ld(1, [vint(1, id), ld(7, 'InvalidPartitionKey'), ld(8, 'empty'), vint(9, 1)]);
  const accepted = (runs) => frame(ld(6, [ld(1, runs.map((r) => varint(r[0]))), ld(2, runs.map((r) => varint(r[1])))]));
  let frames = 0;
  const steps = [];
  const server = net.createServer((c) => {
    let buf = Buffer.alloc(0);
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        buf = buf.subarray(4 + buf.readUInt32BE(0));
        const step = steps[frames++];
        if (step) step(c);
      }
    });
  });
  await new Promise((r) => server.listen(sockPath, r));
  steps.push((c) => c.write(hello));
  // Round 1: ids 1-2 (putRecords), 3 (putRecord, refused), 4-5 (send). Record 2 is accepted by
  // its result alone; one Accepted names 4-5 and 1, in that order.
  steps.push((c) => {
    c.write(frame(ld(2, [ok(2), refused(3)])));
    c.write(accepted([[4, 2], [1, 1]]));
  });
  // Round 2: ids 6-7; only 6 is accepted, then the peer closes.
  steps.push((c) => {
    c.write(accepted([[6, 1]]));
    c.end();
  });
  const p = new Producer({ socketPath: sockPath });
  try {
    const settled = p.putRecords('s', [{ partitionKey: 'a', data: '1' }, { partitionKey: 'b', data: '2' }]);
    const single = p.putRecord({ stream: 's', partitionKey: '', data: '3' });
    single.catch(() => undefined);
    const sent = p.send('s', [{ partitionKey: 'c', data: '4' }, { partitionKey: 'd', data: '5' }]);
    await settled.accepted();
    await sent.accepted();
    const err = await single.accepted().then(() => assert.fail('refused record accepted'), (e) => e);
    assert.ok(err instanceof RecordFailedError);
    assert.equal(err.code, 'InvalidPartitionKey');
    assert.equal(err.refused, true);
    assert.equal(await single.catch((e) => e), err, 'accepted() rejects with the record\'s own error');
    assert.equal(p.outstanding, 3, 'records 1, 4 and 5 accepted without results');

    const round2 = p.putRecords('s', [{ partitionKey: 'e', data: '6' }, { partitionKey: 'f', data: '7' }]);
    await assert.rejects(round2.accepted(), ConnectionError);
    await settled.accepted(); // accepted stays accepted after the connection is gone
    const [r1, r2] = await settled;
    assert.equal(r1.status, 'rejected');
    assert.ok(r1.reason instanceof ConnectionError);
    assert.equal(r2.status, 'fulfilled');
  } finally {
    p.destroy();
    server.close();
  }
});

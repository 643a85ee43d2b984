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

// Unit tests of the hand-written protobuf codec (lib/codec.js): bytes the encoder writes,
// values the decoder reads, frame splitting, and malformed input.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const codec = require('../lib/codec');
const { ProtocolError } = require('../lib/errors');
const pb = require('../test-support/pb');

const hex = (b) => Buffer.from(b).toString('hex');

test('varints are minimal and round-trip from 0 to 2^64-1', () => {
  const values = [0, 1, 127, 128, 300, 16383, 16384, 2 ** 21, 2 ** 28 - 1, 2 ** 28, 2 ** 31, 2 ** 32 + 5, 2 ** 35, Number.MAX_SAFE_INTEGER];
  for (const v of values) {
    const buf = Buffer.alloc(10);
    const end = codec.writeVarint(buf, 0, v);
    assert.equal(end, codec.varintLen(v), `length of ${v}`);
    assert.equal(hex(buf.subarray(0, end)), hex(pb.varint(v)), `bytes of ${v}`);
    // Decode through a FlushReply carrying the value.
    const msg = codec.decodeServerMessageObject(pb.ld(3, pb.vint(1, v)));
    assert.deepEqual(msg, { flushed: { id: v } });
  }
  const big = 2n ** 64n - 1n;
  const buf = Buffer.alloc(10);
  assert.equal(codec.writeVarint(buf, 0, big), 10);
  assert.equal(hex(buf), hex(pb.varint(big)));
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(3, pb.vint(1, big))), { flushed: { id: big } });
  // Above 2^53 a number would round: the decoder gives a BigInt instead.
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(3, pb.vint(1, 2n ** 53n + 1n))), { flushed: { id: 2n ** 53n + 1n } });
});

test('Hello frame: length prefix, then ClientMessage{hello: Hello{protocol_version, client_name}}', () => {
  const expected = pb.frame(pb.ld(1, [pb.vint(1, 1), pb.ld(2, 'kpld-node/0.1.0')]));
  assert.equal(hex(codec.encodeHello(1, 'kpld-node/0.1.0')), hex(expected));
  assert.equal(hex(codec.encodeHello(1, '')), '00000004' + '0a020801');
});

test('FlushRequest and StatsRequest frames; id 0 is left out as proto3 does', () => {
  assert.equal(hex(codec.encodeFlush(7)), hex(pb.frame(pb.ld(3, pb.vint(1, 7)))));
  assert.equal(hex(codec.encodeFlush(0)), '00000002' + '1a00');
  assert.equal(hex(codec.encodeStats(300)), hex(pb.frame(pb.ld(4, pb.vint(1, 300)))));
  assert.equal(hex(codec.encodeFlush(2n ** 64n - 1n)), hex(pb.frame(pb.ld(3, pb.vint(1, 2n ** 64n - 1n)))));
  assert.throws(() => codec.encodeFlush(-1), RangeError);
  assert.throws(() => codec.encodeFlush(1.5), RangeError);
});

test('PutRequest frame: records in field order, empty fields left out, explicit hash key kept when set', () => {
  const records = [
    { stream: 'orders', partitionKey: 'user-1', data: Buffer.from('hello') },
    { stream: 'orders', partitionKey: 'ключ', data: 'héllo', explicitHashKey: '340282366920938463463374607431768211455' },
    { stream: 'other', partitionKey: '', data: new Uint8Array(0), explicitHashKey: '' },
  ];
  const expected = pb.frame(
    pb.ld(2, [
      pb.ld(1, [pb.vint(1, 10), pb.ld(2, 'orders'), pb.ld(3, 'user-1'), pb.ld(5, 'hello')]),
      pb.ld(1, [pb.vint(1, 11), pb.ld(2, 'orders'), pb.ld(3, 'ключ'), pb.ld(4, '340282366920938463463374607431768211455'), pb.ld(5, 'héllo')]),
      pb.ld(1, [pb.vint(1, 12), pb.ld(2, 'other'), pb.ld(4, '')]),
    ]),
  );
  assert.equal(hex(codec.encodePut(records, 10)), hex(expected));
  assert.equal(hex(codec.encodePut(records, [10, 11, 12])), hex(expected));
});

test('PutRequest frame with busy_if_full, and an empty PutRequest', () => {
  const rec = { stream: 's', partitionKey: 'k', data: Buffer.from([0, 1, 2]) };
  const expected = pb.frame(pb.ld(2, [pb.ld(1, [pb.vint(1, 1), pb.ld(2, 's'), pb.ld(3, 'k'), pb.ld(5, Buffer.from([0, 1, 2]))]), pb.vint(2, 1)]));
  assert.equal(hex(codec.encodePut([rec], 1, true)), hex(expected));
  assert.equal(hex(codec.encodePut([], 1, false)), '00000002' + '1200');
  assert.equal(hex(codec.encodePut([], 1, true)), '00000004' + '12021001');
});

test('Record.compression is written as field 6 when set, left out for the stream default', () => {
  const base = { stream: 's', partitionKey: 'k', data: 'x' };
  const expected = (c) => pb.frame(pb.ld(2, [pb.ld(1, [pb.vint(1, 1), pb.ld(2, 's'), pb.ld(3, 'k'), pb.ld(5, 'x'), ...(c ? [pb.vint(6, c)] : [])])]));
  assert.equal(hex(codec.encodePut([base], 1)), hex(expected(0)));
  for (const [name, value] of Object.entries(codec.COMPRESSION)) {
    assert.equal(hex(codec.encodePut([{ ...base, compression: value }], 1)), hex(expected(value)), name);
  }
});

test('stream, partition key and explicit hash key may be given as bytes (they are `bytes` on the wire)', () => {
  const asText = codec.encodePut([{ stream: 'sé', partitionKey: 'ключ', explicitHashKey: '42', data: 'd' }], 1);
  const asBytes = codec.encodePut([{ stream: Buffer.from('sé'), partitionKey: Buffer.from('ключ'), explicitHashKey: new Uint8Array(Buffer.from('42')), data: 'd' }], 1);
  assert.equal(hex(asBytes), hex(asText));
});

test('string data and the same bytes as a Buffer or Uint8Array encode alike', () => {
  const s = 'données ✓';
  const a = codec.encodePut([{ stream: 's', partitionKey: 'k', data: s }], 1);
  const b = codec.encodePut([{ stream: 's', partitionKey: 'k', data: Buffer.from(s) }], 1);
  const c = codec.encodePut([{ stream: 's', partitionKey: 'k', data: new Uint8Array(Buffer.from(s)) }], 1);
  assert.equal(hex(a), hex(b));
  assert.equal(hex(a), hex(c));
});

test('a record large enough for multi-byte lengths encodes its lengths as varints', () => {
  const data = Buffer.alloc(70000, 7);
  const pk = 'k'.repeat(256);
  const expected = pb.frame(pb.ld(2, [pb.ld(1, [pb.vint(1, 2 ** 40), pb.ld(2, 's'), pb.ld(3, pk), pb.ld(5, data)])]));
  assert.equal(codec.encodePut([{ stream: 's', partitionKey: pk, data }], 2 ** 40).equals(expected), true);
});

function entriesOf(frames) {
  // Record entries of PutRequest frames, as hex strings, in order.
  const out = [];
  for (const f of frames) {
    assert.equal(f.readUInt32BE(0), f.length - 4, 'length prefix');
    const r = { i: 4 };
    const read = () => {
      let v = 0;
      let m = 1;
      let b;
      do {
        b = f[r.i++];
        v += (b & 0x7f) * m;
        m *= 128;
      } while (b >= 0x80);
      return v;
    };
    assert.equal(read(), 0x12);
    const putLen = read();
    assert.equal(r.i + putLen, f.length, 'PutRequest length');
    while (r.i < f.length) {
      const start = r.i;
      const tag = read();
      const n = tag === 0x0a ? read() : 0;
      if (tag === 0x10) {
        read();
        continue;
      }
      r.i += n;
      out.push(hex(f.subarray(start, r.i)));
    }
  }
  return out;
}

test('PutFrameBuilder keeps every frame within the daemon limit and every record exactly once', () => {
  const maxBody = 1000;
  const b = new codec.PutFrameBuilder(true, maxBody);
  const sb = codec.streamBytes('stream');
  const expected = [];
  for (let i = 1; i <= 300; i++) {
    const rec = { stream: 'stream', partitionKey: `key-${i}`, data: Buffer.alloc(i % 97, i & 0xff) };
    assert.equal(b.append(i, sb, rec.partitionKey, null, rec.data), true);
    expected.push(...entriesOf([codec.encodePut([rec], i)]));
  }
  const frames = b.take();
  assert.ok(frames.length > 1);
  for (const f of frames) {
    assert.ok(f.length - 4 <= maxBody, `frame body ${f.length - 4} <= ${maxBody}`);
    assert.equal(hex(f.subarray(f.length - 2)), '1001', 'busy_if_full closes every frame');
  }
  assert.deepEqual(entriesOf(frames), expected);
  assert.equal(b.empty, true);
  assert.deepEqual(b.take(), []);
});

test('PutFrameBuilder refuses a record that cannot fit in any frame', () => {
  const b = new codec.PutFrameBuilder(false, 100);
  const sb = codec.streamBytes('s');
  assert.equal(b.append(1, sb, 'k', null, Buffer.alloc(200)), false);
  assert.equal(b.empty, true);
  assert.equal(b.append(2, sb, 'k', null, Buffer.alloc(50)), true);
  assert.equal(b.take().length, 1);
});

test('refitFrames splits frames built for a larger limit and reports records that no longer fit', () => {
  const big = new codec.PutFrameBuilder(false, 1 << 20);
  const small = new codec.PutFrameBuilder(false, 200);
  const sb = codec.streamBytes('s');
  for (let i = 1; i <= 50; i++) {
    const data = Buffer.alloc(i === 25 ? 500 : 20, i);
    big.append(i, sb, `k${i}`, i % 2 ? '12345' : null, data);
    small.append(i, sb, `k${i}`, i % 2 ? '12345' : null, data);
  }
  const tooLarge = [];
  const refit = codec.refitFrames(big.take(), false, 200, (id) => tooLarge.push(id));
  assert.deepEqual(tooLarge, [25]);
  const expected = small.take();
  assert.deepEqual(refit.map(hex), expected.map(hex));
});

test('frames taken stay intact while the builder goes on writing', () => {
  const b = new codec.PutFrameBuilder(false, 1 << 20);
  const sb = codec.streamBytes('s');
  b.append(1, sb, 'a', null, 'first');
  const [f1] = b.take();
  const copy = Buffer.from(f1);
  for (let i = 2; i < 20000; i++) b.append(i, sb, 'b', null, Buffer.alloc(100, 0xff));
  b.take();
  assert.equal(hex(f1), hex(copy));
});

test('decodes HelloReply', () => {
  const msg = pb.ld(1, [pb.vint(1, 1), pb.ld(2, 'kpld 0.1.0'), pb.vint(3, 8 << 20), pb.vint(4, 1 << 20)]);
  assert.deepEqual(codec.decodeServerMessageObject(msg), {
    hello: { protocolVersion: 1, serverVersion: 'kpld 0.1.0', maxFrameSize: 8 << 20, maxRecordSize: 1 << 20 },
  });
});

test('decodes Results with attempts, successes and failures; missing fields get defaults', () => {
  const ok = pb.ld(1, [
    pb.vint(1, 5),
    pb.vint(2, 1),
    pb.ld(3, 'shardId-000000000003'),
    pb.ld(4, '49590338271490256608559692538361571095921575989136588898'),
    pb.vint(5, 17),
    pb.ld(6, [pb.ld(2, 'ProvisionedThroughputExceededException'), pb.ld(3, 'slow down'), pb.vint(4, 100), pb.vint(5, 12)]),
    pb.ld(6, [pb.vint(1, 1), pb.vint(4, 250), pb.vint(5, 9)]),
  ]);
  const failed = pb.ld(1, [pb.vint(1, 6), pb.ld(7, 'InvalidPartitionKey'), pb.ld(8, 'partition key is empty')]);
  const empty = pb.ld(1, []);
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(2, [ok, failed, empty])), {
    results: {
      results: [
        {
          id: 5,
          success: true,
          shardId: 'shardId-000000000003',
          sequenceNumber: '49590338271490256608559692538361571095921575989136588898',
          subSequenceNumber: 17,
          attempts: [
            { success: false, errorCode: 'ProvisionedThroughputExceededException', errorMessage: 'slow down', delayMs: 100, durationMs: 12 },
            { success: true, errorCode: '', errorMessage: '', delayMs: 250, durationMs: 9 },
          ],
          errorCode: '',
          errorMessage: '',
          refused: false,
        },
        { id: 6, success: false, shardId: '', sequenceNumber: '', subSequenceNumber: 0, attempts: [], errorCode: 'InvalidPartitionKey', errorMessage: 'partition key is empty', refused: false },
        { id: 0, success: false, shardId: '', sequenceNumber: '', subSequenceNumber: 0, attempts: [], errorCode: '', errorMessage: '', refused: false },
      ],
    },
  });
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(2, [])), { results: { results: [] } });
});

test('decodes FlushReply, Error and StatsReply', () => {
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(3, pb.vint(1, 42))), { flushed: { id: 42 } });
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(3, [])), { flushed: { id: 0 } });
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(4, [pb.ld(1, 'ShuttingDown'), pb.ld(2, 'kpld is stopping'), pb.vint(3, 1)])), {
    error: { code: 'ShuttingDown', message: 'kpld is stopping', fatal: true },
  });
  assert.deepEqual(codec.decodeServerMessageObject(pb.ld(5, [pb.vint(1, 3), pb.ld(2, '{"streams":{}}')])), {
    stats: { id: 3, json: '{"streams":{}}' },
  });
  assert.deepEqual(codec.decodeServerMessageObject(Buffer.alloc(0)), {});
});

test('unknown fields of every wire type are skipped', () => {
  const unknown = [pb.vint(15, 99), pb.fixed64(16), pb.ld(17, 'x'), pb.fixed32(18)];
  const msg = Buffer.concat([
    ...unknown,
    pb.ld(2, [...unknown, pb.ld(1, [...unknown, pb.vint(1, 9), pb.vint(2, 1), pb.ld(6, [...unknown, pb.vint(1, 1)]), ...unknown])]),
    ...unknown,
  ]);
  const out = codec.decodeServerMessageObject(msg);
  assert.equal(out.results.results.length, 1);
  assert.equal(out.results.results[0].id, 9);
  assert.equal(out.results.results[0].attempts[0].success, true);
});

test('malformed server messages raise ProtocolError', () => {
  const good = pb.ld(2, [pb.ld(1, [pb.vint(1, 9), pb.ld(3, 'shardId-000000000001')])]);
  for (let cut = 1; cut < good.length; cut++) {
    assert.throws(() => codec.decodeServerMessageObject(good.subarray(0, cut)), ProtocolError, `cut at ${cut}`);
  }
  assert.throws(() => codec.decodeServerMessageObject(Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), ProtocolError);
  assert.throws(() => codec.decodeServerMessageObject(Buffer.from([0x0b])), ProtocolError, 'group wire type');
});

test('Accepted decodes packed and unpacked runs, ids above 2^53 as BigInt', () => {
  const packed = Buffer.from([0x32, 0x08, 0x0a, 0x02, 0x05, 0x07, 0x12, 0x02, 0x03, 0x01]);
  const unpacked = Buffer.from([0x32, 0x08, 0x08, 0x05, 0x08, 0x07, 0x10, 0x03, 0x10, 0x01]);
  for (const body of [packed, unpacked]) {
    assert.deepEqual(codec.decodeServerMessageObject(body), { accepted: { firstIds: [5, 7], counts: [3, 1] } });
  }
  const big = Buffer.from([0x32, 0x0d, 0x0a, 0x08, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0x12, 0x01, 0x02]);
  assert.deepEqual(codec.decodeServerMessageObject(big), { accepted: { firstIds: [2n ** 53n + 1n], counts: [2] } });
  assert.throws(() => codec.decodeServerMessageObject(Buffer.from([0x32, 0x04, 0x0a, 0x02, 0x05, 0x07])), /2 first_ids but 0 counts/);
});

test('a refused failure decodes with refused set; the Hello asks for Accepted when told', () => {
  // Results{RecordResult{id 4, error_code "X", refused true}}
  const body = Buffer.from([0x12, 0x09, 0x0a, 0x07, 0x08, 0x04, 0x3a, 0x01, 0x58, 0x48, 0x01]);
  const r = codec.decodeServerMessageObject(body).results.results[0];
  assert.equal(r.refused, true);
  assert.equal(r.errorCode, 'X');
  const hello = codec.encodeHello(1, 'n', true);
  assert.equal(hello.subarray(hello.length - 2).toString('hex'), '1801');
  assert.ok(codec.encodeHello(1, 'n', false).length === hello.length - 2);
});

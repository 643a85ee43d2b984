// Golden frames shared by the daemon's and every client's tests (tests/golden at the repository
// root): the encoder must write the ClientMessage frames byte for byte, the decoder must read
// the ServerMessage frames to the values frames.json describes (proto3 JSON mapping, .proto
// field names, uint64 as decimal strings, bytes as base64, defaults absent).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const codec = require('../lib/codec');

const GOLDEN_DIR = process.env.KPLD_GOLDEN_DIR || path.resolve(__dirname, '..', '..', '..', 'tests', 'golden');
const FRAMES_JSON = path.join(GOLDEN_DIR, 'frames.json');

const hex = (b) => Buffer.from(b).toString('hex');

/** uint64 from the JSON mapping (a decimal string, or a number) as the decoder returns it. */
function u64(v) {
  if (v === undefined) return 0;
  const b = BigInt(v);
  return b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
}

/** uint64 as the encoder takes it. */
const u64In = u64;

const bytes = (v) => (v === undefined ? Buffer.alloc(0) : Buffer.from(v, 'base64'));

// Record.compression in the JSON mapping: the enum value's name, or its number.
const COMPRESSION_NAMES = { COMPRESSION_DEFAULT: 0, COMPRESSION_NONE: 1, COMPRESSION_GZIP: 2, COMPRESSION_ZLIB: 3 };
const compression = (v) => (v === undefined ? 0 : typeof v === 'number' ? v : COMPRESSION_NAMES[v]);

function encodeClientMessage(message, name) {
  const keys = Object.keys(message);
  assert.equal(keys.length, 1, `${name}: one oneof member`);
  const [kind] = keys;
  const m = message[kind];
  switch (kind) {
    case 'hello':
      return codec.encodeHello(m.protocol_version ?? 0, m.client_name ?? '', !!m.want_accepted);
    case 'put': {
      // stream, partition_key and explicit_hash_key are `bytes` in the .proto (UTF-8 text, the
      // same wire encoding as `string`), so base64 in the JSON mapping.
      const recs = (m.records || []).map((r) => ({
        stream: bytes(r.stream),
        partitionKey: bytes(r.partition_key),
        explicitHashKey: r.explicit_hash_key === undefined ? undefined : bytes(r.explicit_hash_key),
        data: bytes(r.data),
        compression: compression(r.compression),
      }));
      const ids = (m.records || []).map((r) => u64In(r.id));
      return codec.encodePut(recs, ids, !!m.busy_if_full);
    }
    case 'flush':
      return codec.encodeFlush(u64In(m.id));
    case 'stats':
      return codec.encodeStats(u64In(m.id));
    default:
      throw new Error(`${name}: unknown ClientMessage member ${kind}`);
  }
}

/** The object decodeServerMessageObject returns for a ServerMessage in the JSON mapping. */
function expectedServerMessage(message) {
  const keys = Object.keys(message);
  assert.ok(keys.length <= 1);
  if (keys.length === 0) return {};
  const [kind] = keys;
  const m = message[kind];
  switch (kind) {
    case 'hello':
      return {
        hello: {
          protocolVersion: m.protocol_version ?? 0,
          serverVersion: m.server_version ?? '',
          maxFrameSize: u64(m.max_frame_size),
          maxRecordSize: u64(m.max_record_size),
        },
      };
    case 'results':
      return {
        results: {
          results: (m.results || []).map((r) => ({
            id: u64(r.id),
            success: r.success ?? false,
            shardId: r.shard_id ?? '',
            sequenceNumber: r.sequence_number ?? '',
            subSequenceNumber: u64(r.sub_sequence_number),
            attempts: (r.attempts || []).map((a) => ({
              success: a.success ?? false,
              errorCode: a.error_code ?? '',
              errorMessage: a.error_message ?? '',
              delayMs: u64(a.delay_ms),
              durationMs: u64(a.duration_ms),
            })),
            errorCode: r.error_code ?? '',
            errorMessage: r.error_message ?? '',
            refused: r.refused ?? false,
          })),
        },
      };
    case 'flushed':
      return { flushed: { id: u64(m.id) } };
    case 'error':
      return { error: { code: m.code ?? '', message: m.message ?? '', fatal: m.fatal ?? false } };
    case 'stats':
      return { stats: { id: u64(m.id), json: m.json ?? '' } };
    case 'accepted':
      return { accepted: { firstIds: (m.first_ids || []).map(u64), counts: (m.counts || []).map(u64) } };
    default:
      throw new Error(`unknown ServerMessage member ${kind}`);
  }
}

if (!fs.existsSync(FRAMES_JSON)) {
  test('golden frames', { skip: `${FRAMES_JSON} does not exist yet` }, () => {});
} else {
  const described = JSON.parse(fs.readFileSync(FRAMES_JSON, 'utf8'));
  const frames = described.frames || described;

  test('golden frames.json describes at least one client and one server frame', () => {
    const types = new Set(Object.values(frames).map((f) => f.type));
    assert.ok(types.has('ClientMessage') && types.has('ServerMessage'), [...types].join(', '));
  });

  for (const [name, { type, message }] of Object.entries(frames)) {
    const file = path.join(GOLDEN_DIR, name);
    test(`golden ${name} (${type})`, () => {
      const bin = fs.readFileSync(file);
      assert.equal(bin.readUInt32BE(0), bin.length - 4, 'length prefix');
      if (type === 'ClientMessage') {
        const ours = encodeClientMessage(message, name);
        assert.equal(hex(ours), hex(bin), 'encoder writes the golden bytes');
      } else if (type === 'ServerMessage') {
        assert.deepEqual(codec.decodeServerMessageObject(bin, 4, bin.length), expectedServerMessage(message));
      } else {
        assert.fail(`unknown message type ${type}`);
      }
    });
  }
}

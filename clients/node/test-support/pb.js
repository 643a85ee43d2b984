// A tiny, independent protobuf writer for tests: builds messages field by field, so codec tests
// can check the client's encoder against bytes assembled another way and feed its decoder
// server messages (including fields it must skip).
'use strict';

function varint(v) {
  let x = BigInt(v);
  const out = [];
  while (x >= 0x80n) {
    out.push(Number(x & 0x7fn) | 0x80);
    x >>= 7n;
  }
  out.push(Number(x));
  return Buffer.from(out);
}

/** Field `n` as a varint. */
function vint(n, v) {
  return Buffer.concat([varint(n * 8), varint(v)]);
}

/** Field `n` as a length-delimited value (Buffer, string or array of Buffers). */
function ld(n, v) {
  const body = Array.isArray(v) ? Buffer.concat(v) : Buffer.from(v);
  return Buffer.concat([varint(n * 8 + 2), varint(body.length), body]);
}

function fixed64(n) {
  return Buffer.concat([varint(n * 8 + 1), Buffer.alloc(8, 0xee)]);
}

function fixed32(n) {
  return Buffer.concat([varint(n * 8 + 5), Buffer.alloc(4, 0xee)]);
}

/** A frame: 4-byte big-endian length, then the message. */
function frame(...parts) {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

module.exports = { varint, vint, ld, fixed64, fixed32, frame };

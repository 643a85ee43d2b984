// Hand-written protobuf encoding and decoding of kpld's socket protocol (proto/kpld.proto,
// version 1), so the package has no runtime dependency.
//
// Wire format: every frame is a 4-byte big-endian length followed by one protobuf message
// (ClientMessage from us, ServerMessage from the daemon):
//
//   +--------+--------+--------+--------+=================================+
//   |   length (u32, big-endian)        |  protobuf message (length bytes) |
//   +--------+--------+--------+--------+=================================+
//
// Encoding is canonical, as prost writes it: fields in number order, proto3 scalars, strings
// and bytes left out when they hold their default, `optional` fields written whenever set,
// oneof members written even when empty, varints minimal. So the bytes are comparable with
// the golden frames in tests/golden.
//
// uint64 values decode to numbers; a value above Number.MAX_SAFE_INTEGER (which kpld never
// sends for fields this client uses) decodes to a BigInt rather than a rounded number.
'use strict';

const { ProtocolError } = require('./errors');

const PROTOCOL_VERSION = 1;
const FRAME_HEADER = 4;

/** Record.compression (enum Compression), by the names the client API takes. */
const COMPRESSION = Object.freeze({ default: 0, none: 1, gzip: 2, zlib: 3 });

// ---------------------------------------------------------------------------------------------
// varints

/** Byte length of the varint of a non-negative integer (number <= 2^53, or bigint). */
function varintLen(v) {
  if (typeof v === 'bigint') return bigVarintLen(v);
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  let n = 4;
  v = Math.floor(v / 0x10000000);
  while (v > 0) {
    n++;
    v = Math.floor(v / 0x80);
  }
  return n;
}

function bigVarintLen(v) {
  let n = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    n++;
  }
  return n;
}

/** Writes the varint of v at off; returns the offset after it. */
function writeVarint(buf, off, v) {
  if (typeof v === 'bigint') return writeBigVarint(buf, off, v);
  while (v >= 0x80) {
    buf[off++] = (v & 0x7f) | 0x80; // ToInt32 keeps the low bits, also above 2^31
    v = v >= 0x80000000 ? Math.floor(v / 0x80) : v >>> 7;
  }
  buf[off++] = v;
  return off;
}

function writeBigVarint(buf, off, v) {
  if (v < 0n || v >= 1n << 64n) throw new RangeError(`uint64 out of range: ${v}`);
  while (v >= 0x80n) {
    buf[off++] = Number(v & 0x7fn) | 0x80;
    v >>= 7n;
  }
  buf[off++] = Number(v);
  return off;
}

function checkUint(v, what) {
  if (typeof v === 'bigint') {
    if (v >= 0n && v < 1n << 64n) return;
  } else if (Number.isSafeInteger(v) && v >= 0) {
    return;
  }
  throw new RangeError(`${what} must be an unsigned integer below 2^53 (or a bigint below 2^64), got ${v}`);
}

// ---------------------------------------------------------------------------------------------
// encoding: small messages

function frameOf(body) {
  const buf = Buffer.allocUnsafe(FRAME_HEADER + body.length);
  buf.writeUInt32BE(body.length, 0);
  body.copy(buf, FRAME_HEADER);
  return buf;
}

/** A ClientMessage whose oneof member `field` is a message with one uint64 field 1 (`id`). */
function encodeIdMessage(field, id) {
  checkUint(id, 'id');
  const inner = id === 0 || id === 0n ? 0 : 1 + varintLen(id);
  const body = Buffer.allocUnsafe(1 + varintLen(inner) + inner);
  body[0] = (field << 3) | 2;
  let off = writeVarint(body, 1, inner);
  if (inner > 0) {
    body[off++] = 0x08;
    writeVarint(body, off, id);
  }
  return frameOf(body);
}

/** Frame of ClientMessage{hello: Hello{protocol_version, client_name, want_accepted}}. */
function encodeHello(protocolVersion = PROTOCOL_VERSION, clientName = '', wantAccepted = false) {
  checkUint(protocolVersion, 'protocol_version');
  const name = Buffer.from(clientName, 'utf8');
  let inner = 0;
  if (protocolVersion !== 0) inner += 1 + varintLen(protocolVersion);
  if (name.length > 0) inner += 1 + varintLen(name.length) + name.length;
  if (wantAccepted) inner += 2;
  const body = Buffer.allocUnsafe(1 + varintLen(inner) + inner);
  body[0] = 0x0a;
  let off = writeVarint(body, 1, inner);
  if (protocolVersion !== 0) {
    body[off++] = 0x08;
    off = writeVarint(body, off, protocolVersion);
  }
  if (name.length > 0) {
    body[off++] = 0x12;
    off = writeVarint(body, off, name.length);
    off += name.copy(body, off);
  }
  if (wantAccepted) {
    body[off++] = 0x18; // Hello.want_accepted
    body[off++] = 0x01;
  }
  return frameOf(body);
}

/** Frame of ClientMessage{flush: FlushRequest{id}}. */
function encodeFlush(id) {
  return encodeIdMessage(3, id);
}

/** Frame of ClientMessage{stats: StatsRequest{id}}. */
function encodeStats(id) {
  return encodeIdMessage(4, id);
}

// ---------------------------------------------------------------------------------------------
// encoding: PutRequest, the hot path

// Encoded stream names, by name (few distinct names in practice; bounded anyway).
const streamCache = new Map();
const STREAM_CACHE_MAX = 1024;

function streamBytes(name) {
  let b = streamCache.get(name);
  if (b === undefined) {
    if (streamCache.size >= STREAM_CACHE_MAX) streamCache.clear();
    b = Buffer.from(name == null ? '' : name, 'utf8');
    streamCache.set(name, b);
  }
  return b;
}

function lenField(n) {
  return n === 0 ? 0 : 1 + varintLen(n) + n;
}

const utf8Length = Buffer.byteLength;

// Buffer's own utf8Write/utf8Slice skip the argument handling of write()/toString(); they are
// undocumented, so fall back to the public methods where they are missing.
const utf8Write =
  typeof Buffer.prototype.utf8Write === 'function'
    ? (buf, s, off, len) => buf.utf8Write(s, off, len)
    : (buf, s, off, len) => buf.write(s, off, len, 'utf8');
const utf8Slice =
  typeof Buffer.prototype.utf8Slice === 'function'
    ? (buf, start, end) => buf.utf8Slice(start, end)
    : (buf, start, end) => buf.toString('utf8', start, end);

// Room kept in front of every frame for the length prefix, the ClientMessage.put tag and the
// PutRequest length (a varint of at most 5 bytes), and behind it for busy_if_full.
const HEADER_RESERVE = 4 + 1 + 5;
const TRAILER_RESERVE = 2;
const SLAB_SIZE = 1 << 20;

/** The most record-entry bytes a PutRequest frame body of maxBody bytes can hold. */
function entriesLimit(maxBody) {
  return maxBody - TRAILER_RESERVE - 1 - varintLen(maxBody);
}

/**
 * Builds PutRequest frames record by record, copying each record into a slab at once (so the
 * caller may reuse its buffers as soon as the put returns) and handing out finished frames
 * as views of the slab, without a further copy.
 *
 * A frame is open while records are appended; `take()` closes it (writes the length prefix and
 * headers into the room kept in front of it) and returns every finished frame. A frame holds
 * at most `limit` bytes of record entries; a record whose entry alone exceeds the limit is
 * refused by append().
 */
class PutFrameBuilder {
  /**
   * @param busyIfFull  sets PutRequest.busy_if_full on every frame
   * @param maxBody     largest frame body (bytes after the length prefix) the daemon accepts;
   *                    frames are also kept below the slab size, except for one huge record
   */
  constructor(busyIfFull, maxBody) {
    this.busyIfFull = !!busyIfFull;
    this.slab = null;
    this.pos = 0;
    this.frameStart = -1; // offset of the open frame's header room, -1 when none is open
    this.frames = [];
    this.setMaxBody(maxBody);
  }

  setMaxBody(maxBody) {
    this.maxBody = maxBody;
    this.limit = entriesLimit(maxBody);
  }

  /** Drops every record appended and every frame not yet taken. */
  reset() {
    this.frameStart = -1;
    this.frames = [];
  }

  get empty() {
    return this.frameStart < 0 && this.frames.length === 0;
  }

  /**
   * Appends one Record entry. `stream` is the stream name's bytes; `partitionKey` a string (or
   * bytes); `explicitHashKey` a string (or bytes), or null/undefined when absent; `data` a
   * Buffer, Uint8Array or string; `compression` a Compression enum value (0: the stream's
   * setting). Returns false, appending nothing, when the entry alone would exceed the frame
   * limit.
   */
  append(id, stream, partitionKey, explicitHashKey, data, compression = 0) {
    const pkLen = partitionKey.length === 0 ? 0 : typeof partitionKey === 'string' ? utf8Length(partitionKey) : partitionKey.byteLength;
    const ehkLen = explicitHashKey == null ? -1 : typeof explicitHashKey === 'string' ? utf8Length(explicitHashKey) : explicitHashKey.byteLength;
    const dLen = typeof data === 'string' ? utf8Length(data) : data.byteLength;
    const sLen = stream.length;
    const body =
      (id === 0 || id === 0n ? 0 : 1 + varintLen(id)) +
      lenField(sLen) +
      lenField(pkLen) +
      (ehkLen >= 0 ? 1 + varintLen(ehkLen) + ehkLen : 0) +
      lenField(dLen) +
      (compression === 0 ? 0 : 1 + varintLen(compression));
    const entry = 1 + varintLen(body) + body;
    if (entry > this.limit) return false;
    let buf = this.reserve(entry);
    let off = this.pos;
    buf[off++] = 0x0a; // PutRequest.records
    off = writeVarint(buf, off, body);
    if (id !== 0 && id !== 0n) {
      buf[off++] = 0x08; // Record.id
      off = writeVarint(buf, off, id);
    }
    if (sLen !== 0) {
      buf[off++] = 0x12; // Record.stream
      off = writeVarint(buf, off, sLen);
      for (let b = 0; b < sLen; b++) buf[off + b] = stream[b];
      off += sLen;
    }
    if (pkLen !== 0) {
      buf[off++] = 0x1a; // Record.partition_key
      off = writeVarint(buf, off, pkLen);
      if (typeof partitionKey === 'string') utf8Write(buf, partitionKey, off, pkLen);
      else buf.set(partitionKey, off);
      off += pkLen;
    }
    if (ehkLen >= 0) {
      buf[off++] = 0x22; // Record.explicit_hash_key (optional: written even when empty)
      off = writeVarint(buf, off, ehkLen);
      if (typeof explicitHashKey === 'string') utf8Write(buf, explicitHashKey, off, ehkLen);
      else buf.set(explicitHashKey, off);
      off += ehkLen;
    }
    if (dLen !== 0) {
      buf[off++] = 0x2a; // Record.data
      off = writeVarint(buf, off, dLen);
      if (typeof data === 'string') utf8Write(buf, data, off, dLen);
      else buf.set(data, off);
      off += dLen;
    }
    if (compression !== 0) {
      buf[off++] = 0x30; // Record.compression
      off = writeVarint(buf, off, compression);
    }
    this.pos = off;
    return true;
  }

  /** Appends an already encoded Record entry (tag, length and body). */
  appendEntry(src, start, end) {
    const n = end - start;
    if (n > this.limit) return false;
    const buf = this.reserve(n);
    src.copy(buf, this.pos, start, end);
    this.pos += n;
    return true;
  }

  /** Makes room for an entry of n bytes in the open frame (opening one if needed). */
  reserve(n) {
    if (this.frameStart >= 0) {
      const used = this.pos - this.frameStart - HEADER_RESERVE;
      if (used + n <= this.limit && this.pos + n + TRAILER_RESERVE <= this.slab.length) return this.slab;
      this.close();
    }
    const need = HEADER_RESERVE + n + TRAILER_RESERVE;
    if (this.slab === null || this.slab.length - this.pos < need) {
      this.slab = Buffer.allocUnsafe(Math.max(SLAB_SIZE, need));
      this.pos = 0;
    }
    this.frameStart = this.pos;
    this.pos += HEADER_RESERVE;
    return this.slab;
  }

  /** Closes the open frame, if any. */
  close() {
    if (this.frameStart < 0) return;
    const buf = this.slab;
    const bodyStart = this.frameStart + HEADER_RESERVE;
    if (this.busyIfFull) {
      buf[this.pos++] = 0x10; // PutRequest.busy_if_full
      buf[this.pos++] = 0x01;
    }
    const putLen = this.pos - bodyStart;
    const headLen = 1 + varintLen(putLen);
    const start = bodyStart - headLen - FRAME_HEADER;
    buf.writeUInt32BE(headLen + putLen, start);
    buf[start + 4] = 0x12; // ClientMessage.put
    writeVarint(buf, start + 5, putLen);
    this.frames.push(buf.subarray(start, this.pos));
    this.frameStart = -1;
  }

  /** Closes the open frame and returns every finished frame (Buffers with length prefix). */
  take() {
    this.close();
    const frames = this.frames;
    this.frames = [];
    return frames;
  }
}

/** Calls fn(start, end) for every Record entry (tag included) of a PutRequest frame. */
function forEachEntry(frame, fn) {
  const r = new Reader(frame, FRAME_HEADER, frame.length);
  r.tag(); // ClientMessage.put
  const putEnd = r.len();
  while (r.pos < putEnd) {
    const start = r.pos;
    const tag = r.tag();
    if (tag !== 0x0a) {
      r.skip(tag & 7);
      continue;
    }
    const end = r.len();
    fn(start, end);
    r.pos = end;
  }
}

/** The id of the Record entry at frame[start..end) (0 when absent). */
function entryId(frame, start, end) {
  const r = new Reader(frame, start, end);
  r.tag();
  const e = r.len();
  return decodeIdOnly(r, e);
}

/**
 * Splits frames that exceed maxBody into frames that fit. Entries that cannot fit alone are
 * left out and their ids passed to onTooLarge(id). Returns the new list of frames.
 */
function refitFrames(frames, busyIfFull, maxBody, onTooLarge) {
  if (frames.every((f) => f.length - FRAME_HEADER <= maxBody)) return frames;
  const out = [];
  for (const frame of frames) {
    if (frame.length - FRAME_HEADER <= maxBody) {
      out.push(frame);
      continue;
    }
    const b = new PutFrameBuilder(busyIfFull, maxBody);
    forEachEntry(frame, (start, end) => {
      if (!b.appendEntry(frame, start, end)) onTooLarge(entryId(frame, start, end));
    });
    out.push(...b.take());
  }
  return out;
}

/**
 * Frame of one PutRequest holding `records` ({ stream, partitionKey, explicitHashKey, data,
 * compression }: stream, key and hash key as strings or bytes, compression an enum value) with
 * the given ids (array) or first id (number). Uses the producer's encoder.
 */
function encodePut(records, ids, busyIfFull = false) {
  const b = new PutFrameBuilder(busyIfFull, 0xffffffff);
  records.forEach((rec, i) => {
    const id = Array.isArray(ids) ? ids[i] : ids + i;
    checkUint(id, 'id');
    const stream = typeof rec.stream === 'string' || rec.stream == null ? streamBytes(rec.stream) : rec.stream;
    b.append(id, stream, rec.partitionKey || '', rec.explicitHashKey, rec.data || '', rec.compression || 0);
  });
  const frames = b.take();
  if (frames.length === 1) return frames[0];
  if (frames.length === 0) {
    // An empty PutRequest: ClientMessage{put: PutRequest{busy_if_full}}.
    const body = busyIfFull ? Buffer.from([0x12, 0x02, 0x10, 0x01]) : Buffer.from([0x12, 0x00]);
    return frameOf(body);
  }
  throw new RangeError('records do not fit in one frame');
}

// ---------------------------------------------------------------------------------------------
// decoding

class Reader {
  constructor(buf, pos, end) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  truncated() {
    return new ProtocolError('malformed frame from kpld: message truncated', 'MalformedFrame');
  }

  varint() {
    const buf = this.buf;
    const start = this.pos;
    let pos = start;
    let b = buf[pos++];
    let v = b & 0x7f;
    if (b >= 0x80) {
      b = buf[pos++];
      v |= (b & 0x7f) << 7;
      if (b >= 0x80) {
        b = buf[pos++];
        v |= (b & 0x7f) << 14;
        if (b >= 0x80) {
          b = buf[pos++];
          v |= (b & 0x7f) << 21;
          if (b >= 0x80) return this.varintSlow(start);
        }
      }
    }
    if (pos > this.end) throw this.truncated();
    this.pos = pos;
    return v;
  }

  varintSlow(start) {
    const buf = this.buf;
    let pos = start;
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= this.end) throw this.truncated();
      const b = buf[pos++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) {
        this.pos = pos;
        if (v <= Number.MAX_SAFE_INTEGER) return v;
        let big = 0n;
        for (let p = pos - 1; p >= start; p--) big = (big << 7n) | BigInt(buf[p] & 0x7f);
        return BigInt.asUintN(64, big);
      }
      mul *= 0x80;
    }
    throw new ProtocolError('malformed frame from kpld: varint longer than 10 bytes', 'MalformedFrame');
  }

  /** Returns the end offset of a length-delimited field and leaves pos at its start. */
  len() {
    const n = this.varint();
    if (typeof n !== 'number' || this.pos + n > this.end) throw this.truncated();
    return this.pos + n;
  }

  tag() {
    const t = this.varint();
    if (typeof t !== 'number' || t > 0xffffffff) {
      throw new ProtocolError('malformed frame from kpld: field tag out of range', 'MalformedFrame');
    }
    return t;
  }

  string() {
    const end = this.len();
    const s = end === this.pos ? '' : utf8Slice(this.buf, this.pos, end);
    this.pos = end;
    return s;
  }

  bool() {
    return this.varint() !== 0;
  }

  skip(wire) {
    switch (wire) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.pos = this.len();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new ProtocolError(`malformed frame from kpld: unsupported wire type ${wire}`, 'MalformedFrame');
    }
    if (this.pos > this.end) throw this.truncated();
  }
}

function decodeHello(r, end) {
  const m = { protocolVersion: 0, serverVersion: '', maxFrameSize: 0, maxRecordSize: 0 };
  while (r.pos < end) {
    const tag = r.tag();
    switch (tag) {
      case 0x08: m.protocolVersion = r.varint(); break;
      case 0x12: m.serverVersion = r.string(); break;
      case 0x18: m.maxFrameSize = r.varint(); break;
      case 0x20: m.maxRecordSize = r.varint(); break;
      default: r.skip(tag & 7);
    }
  }
  return m;
}

function decodeAttempt(r, end) {
  let success = false;
  let errorCode = '';
  let errorMessage = '';
  let delayMs = 0;
  let durationMs = 0;
  while (r.pos < end) {
    const tag = r.tag();
    switch (tag) {
      case 0x08: success = r.bool(); break;
      case 0x12: errorCode = r.string(); break;
      case 0x1a: errorMessage = r.string(); break;
      case 0x20: delayMs = r.varint(); break;
      case 0x28: durationMs = r.varint(); break;
      default: r.skip(tag & 7);
    }
  }
  return { success, errorCode, errorMessage, delayMs, durationMs };
}

function decodeRecordResult(r, end, handler) {
  let id = 0;
  let success = false;
  let shardId = '';
  let sequenceNumber = '';
  let subSequenceNumber = 0;
  const attempts = [];
  let errorCode = '';
  let errorMessage = '';
  let refused = false;
  while (r.pos < end) {
    const tag = r.tag();
    switch (tag) {
      case 0x08: id = r.varint(); break;
      case 0x10: success = r.bool(); break;
      case 0x1a: shardId = r.string(); break;
      case 0x22: sequenceNumber = r.string(); break;
      case 0x28: subSequenceNumber = r.varint(); break;
      case 0x32: {
        const e = r.len();
        attempts.push(decodeAttempt(r, e));
        break;
      }
      case 0x3a: errorCode = r.string(); break;
      case 0x42: errorMessage = r.string(); break;
      case 0x48: refused = r.bool(); break;
      default: r.skip(tag & 7);
    }
  }
  handler.result(id, success, shardId, sequenceNumber, subSequenceNumber, attempts, errorCode, errorMessage, refused);
}

function decodeResults(r, end, handler) {
  handler.resultsBegin();
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x0a) {
      const e = r.len();
      decodeRecordResult(r, e, handler);
      r.pos = e;
    } else {
      r.skip(tag & 7);
    }
  }
}

/** Appends the values of a repeated uint64 field, packed (tag LEN) or not (tag VARINT). */
function repeatedU64(r, wire, out) {
  if (wire === 0) {
    out.push(r.varint());
    return;
  }
  const e = r.len();
  while (r.pos < e) out.push(r.varint());
  r.pos = e;
}

/** Accepted{first_ids, counts}: runs of accepted record ids. */
function decodeAccepted(r, end) {
  const firstIds = [];
  const counts = [];
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x0a || tag === 0x08) repeatedU64(r, tag & 7, firstIds);
    else if (tag === 0x12 || tag === 0x10) repeatedU64(r, tag & 7, counts);
    else r.skip(tag & 7);
  }
  if (firstIds.length !== counts.length) {
    throw new ProtocolError(`malformed Accepted from kpld: ${firstIds.length} first_ids but ${counts.length} counts`, 'MalformedFrame');
  }
  return { firstIds, counts };
}

function decodeIdOnly(r, end) {
  let id = 0;
  while (r.pos < end) {
    const tag = r.tag();
    if (tag === 0x08) id = r.varint();
    else r.skip(tag & 7);
  }
  return id;
}

function decodeError(r, end) {
  const m = { code: '', message: '', fatal: false };
  while (r.pos < end) {
    const tag = r.tag();
    switch (tag) {
      case 0x0a: m.code = r.string(); break;
      case 0x12: m.message = r.string(); break;
      case 0x18: m.fatal = r.bool(); break;
      default: r.skip(tag & 7);
    }
  }
  return m;
}

function decodeStats(r, end) {
  const m = { id: 0, json: '' };
  while (r.pos < end) {
    const tag = r.tag();
    switch (tag) {
      case 0x08: m.id = r.varint(); break;
      case 0x12: m.json = r.string(); break;
      default: r.skip(tag & 7);
    }
  }
  return m;
}

/**
 * Decodes one ServerMessage (the bytes after a frame's length prefix, buf[start..end)) and
 * calls the handler: hello(m), resultsBegin() then result(id, success, shardId,
 * sequenceNumber, subSequenceNumber, attempts, errorCode, errorMessage, refused) once per
 * record, flushed(id), error(m), stats(m), accepted(firstIds, counts) (runs of accepted record
 * ids; an id above 2^53 is a BigInt). Throws ProtocolError on malformed input.
 */
function decodeServerMessage(buf, start, end, handler) {
  const r = new Reader(buf, start, end);
  while (r.pos < end) {
    const tag = r.tag();
    if ((tag & 7) !== 2 || tag > 0x32) {
      r.skip(tag & 7);
      continue;
    }
    const e = r.len();
    switch (tag) {
      case 0x0a: handler.hello(decodeHello(r, e)); break;
      case 0x12: decodeResults(r, e, handler); break;
      case 0x1a: handler.flushed(decodeIdOnly(r, e)); break;
      case 0x22: handler.error(decodeError(r, e)); break;
      case 0x2a: handler.stats(decodeStats(r, e)); break;
      case 0x32: {
        const a = decodeAccepted(r, e);
        handler.accepted(a.firstIds, a.counts);
        break;
      }
      default: break;
    }
    r.pos = e;
  }
}

/**
 * Decodes one ServerMessage into a plain object, e.g. { hello: {...} }, { results: { results:
 * [...] } }, { flushed: { id } }, { error: {...} }, { stats: {...} }, { accepted: { firstIds,
 * counts } } (camelCase field names,
 * every field present with its default). For tests and tools; the producer uses the handler
 * form.
 */
function decodeServerMessageObject(buf, start = 0, end = buf.length) {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let out = {};
  decodeServerMessage(b, start, end, {
    hello(m) { out = { hello: m }; },
    resultsBegin() { out = { results: { results: [] } }; },
    result(id, success, shardId, sequenceNumber, subSequenceNumber, attempts, errorCode, errorMessage, refused) {
      out.results.results.push({ id, success, shardId, sequenceNumber, subSequenceNumber, attempts, errorCode, errorMessage, refused });
    },
    accepted(firstIds, counts) { out = { accepted: { firstIds, counts } }; },
    flushed(id) { out = { flushed: { id } }; },
    error(m) { out = { error: m }; },
    stats(m) { out = { stats: m }; },
  });
  return out;
}

module.exports = {
  PROTOCOL_VERSION,
  FRAME_HEADER,
  COMPRESSION,
  varintLen,
  writeVarint,
  encodeHello,
  encodeFlush,
  encodeStats,
  encodePut,
  PutFrameBuilder,
  refitFrames,
  entriesLimit,
  streamBytes,
  decodeServerMessage,
  decodeServerMessageObject,
};

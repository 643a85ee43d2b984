// The Producer: one Unix-socket connection to kpld, made lazily on the first put and again on
// the first put after it was lost. Records are copied into PutRequest frames as they are put;
// everything put during one turn of the event loop leaves in one frame (or a few, when large)
// at the next turn. Results come back in any order and are matched by record id.
//
// Invariants:
// - Record ids increase over the producer's life; each put call gets a contiguous range, so
//   outstanding calls ("batches") sit in `batches` in id order and a result finds its batch by
//   binary search.
// - Every outstanding record and request belongs to the current connection: when it is lost,
//   all of them fail with ConnectionError at once, and the next put starts a new connection.
// - The socket is ref()ed only while records or requests are outstanding, so an idle producer
//   never keeps the process alive; timers are unref()ed.
// - Acceptance (docs/protocol.md, "Acceptance"; the Hello always asks for it): a record is
//   accepted once an Accepted message names it or its result is a success or a failure without
//   `refused`. Each batch marks its accepted records in `acc` (one byte per record) and counts
//   them with the refused ones; when the two add up to the batch's count, or the connection is
//   lost first, its acceptance is final, and the promise of `accepted()` (made only when
//   somebody calls it) settles.
'use strict';

const net = require('net');
const { EventEmitter } = require('events');
const codec = require('./codec');
const { KpldError, ConnectionError, RecordFailedError, BusyError, ProtocolError } = require('./errors');
const { version } = require('../package.json');

const DEFAULT_SOCKET_PATH = '/run/kpld/kpld.sock';
// Frame body limit assumed until the HelloReply names the daemon's own (frames already built
// are split again then if needed; slabs keep frames near 1 MiB anyway), and when the daemon
// names none.
const PRE_HELLO_MAX_FRAME_SIZE = 256 << 20;
const DEFAULT_MAX_FRAME_SIZE = 1 << 20;
// Largest server frame this client accepts.
const MAX_SERVER_FRAME = 256 << 20;
const DEFAULT_CONNECT_TIMEOUT_MS = 10000;
// Error codes of Error frames that mean a client or daemon bug.
const PROTOCOL_CODES = new Set(['ProtocolVersion', 'FrameTooLarge', 'MalformedFrame', 'UnexpectedMessage']);

// What a put call wants back.
const SINGLE = 0; // putRecord: one promise, resolved or rejected
const SETTLED = 1; // putRecords: one promise of an array of settled results
const SEND = 2; // send: nothing; failures counted and emitted as 'recordFailed'
const BATCH = 3; // putBatch: one promise of a RecordBatch (compact results, objects built when read)

/**
 * The results of one putBatch call, compact: per record its shard id, sequence number,
 * sub-sequence number and attempts sit in parallel arrays (strings shared between the records
 * of one aggregate), and the result object is built only when read.
 */
class RecordBatch {
  constructor(count) {
    /** Records in the batch, in the order given. */
    this.length = count;
    /** Records whose final result is a success. */
    this.succeeded = 0;
    /** Records whose final result is a failure. */
    this.failed = 0;
    this._shard = new Array(count);
    this._seq = new Array(count);
    this._sub = new Array(count);
    this._attempts = new Array(count);
    this._errors = null; // index -> error, once one failed
  }

  /** Record i's error (RecordFailedError, BusyError, ConnectionError), or null if it succeeded. */
  error(i) {
    this._check(i);
    return this._errors !== null && this._errors.has(i) ? this._errors.get(i) : null;
  }

  /** Record i's result { shardId, sequenceNumber, subSequenceNumber, attempts }; throws its error. */
  result(i) {
    const err = this.error(i);
    if (err !== null) throw err;
    return { shardId: this._shard[i], sequenceNumber: this._seq[i], subSequenceNumber: this._sub[i], attempts: this._attempts[i] };
  }

  /** [index, error] of every failed record, in index order. */
  failures() {
    if (this._errors === null) return [];
    return [...this._errors.entries()].sort((a, b) => a[0] - b[0]);
  }

  /** Every record's outcome shaped as putRecords resolves them (built now). */
  settled() {
    const out = new Array(this.length);
    for (let i = 0; i < this.length; i++) {
      const err = this.error(i);
      out[i] = err === null ? { status: 'fulfilled', value: this.result(i) } : { status: 'rejected', reason: err };
    }
    return out;
  }

  _check(i) {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new RangeError(`record index ${i} out of range for a batch of ${this.length}`);
  }

  _fail(i, err) {
    if (this._errors === null) this._errors = new Map();
    this._errors.set(i, err);
    this.failed++;
  }
}

class Batch {
  constructor(kind, firstId, count, resolve, reject) {
    this.kind = kind;
    this.firstId = firstId;
    this.count = count;
    this.remaining = count;
    // SETTLED: settled results; SEND and BATCH: 1 where a record has its result.
    this.results = kind === SETTLED ? new Array(count) : kind === SEND || kind === BATCH ? new Uint8Array(count) : null;
    this.batch = kind === BATCH ? new RecordBatch(count) : null;
    this.resolve = resolve;
    this.reject = reject;
    this.stream = null; // SEND only: for 'recordFailed'
    this.records = null; // SEND only: for 'recordFailed'
    // Acceptance: 1 per record accepted (named by an Accepted, or answered without `refused`).
    this.acc = new Uint8Array(count);
    this.nAccepted = 0;
    this.nRefused = 0;
    this.refusedErr = null; // the refusal of the lowest-index refused record
    this.refusedAt = -1;
    this.accFinal = null; // once final: true (all accepted) or the error accepted() rejects with
    this.accWaiter = null; // { promise, resolve, reject } once accepted() was called
  }
}

/** Settles b's acceptance with `final` (true or an error), once. */
function finishAcceptance(b, final) {
  if (b.accFinal !== null) return;
  b.accFinal = final;
  const w = b.accWaiter;
  if (w === null) return;
  if (final === true) w.resolve();
  else w.reject(final);
}

/** Records record i of b as accepted; settles b's acceptance when every record is known. */
function markAccepted(b, i) {
  if (b.acc[i] !== 0) return;
  b.acc[i] = 1;
  b.nAccepted++;
  if (b.nAccepted + b.nRefused === b.count) finishAcceptance(b, b.nRefused === 0 ? true : b.refusedErr);
}

function markRefused(b, i, err) {
  if (b.acc[i] !== 0) return;
  b.acc[i] = 2;
  b.nRefused++;
  if (b.refusedAt === -1 || i < b.refusedAt) {
    b.refusedAt = i;
    b.refusedErr = err;
  }
  if (b.nAccepted + b.nRefused === b.count) finishAcceptance(b, b.refusedErr);
}

/** The promise accepted() returns for batch b. */
function acceptedOf(b) {
  const final = b.accFinal;
  if (final === true) return Promise.resolve();
  if (final !== null) return Promise.reject(final);
  if (b.accWaiter === null) {
    const w = { promise: null, resolve: null, reject: null };
    w.promise = new Promise((resolve, reject) => {
      w.resolve = resolve;
      w.reject = reject;
    });
    b.accWaiter = w;
  }
  return b.accWaiter.promise;
}

/** `promise` with an accepted() method: (batch or an error). */
function withAccepted(promise, of) {
  promise.accepted = of instanceof Error ? () => Promise.reject(of) : of === null ? () => Promise.resolve() : () => acceptedOf(of);
  return promise;
}

/**
 * What send() returns: accepted() resolves once the daemon has accepted every record of the
 * call, and rejects with the error of the first record it did not accept.
 */
class Sent {
  constructor(b) {
    this._b = b;
  }

  accepted() {
    return this._b === null ? Promise.resolve() : acceptedOf(this._b);
  }
}

function recordError(code, message, attempts, refused) {
  return code === 'Busy' ? new BusyError(code, message, attempts, refused) : new RecordFailedError(code, message, attempts, refused);
}

const COMPRESSION = codec.COMPRESSION;

/** Record.compression's enum value for a record's `compression` option (checked before). */
function compressionOf(c) {
  return c == null ? 0 : COMPRESSION[c];
}

function checkRecordFields(partitionKey, data, explicitHashKey, compression, where) {
  if (compression != null && !Object.prototype.hasOwnProperty.call(COMPRESSION, compression)) {
    throw new TypeError(`${where}compression must be one of ${Object.keys(COMPRESSION).join(', ')}`);
  }
  if (typeof partitionKey !== 'string') throw new TypeError(`${where}partitionKey must be a string`);
  if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
    throw new TypeError(`${where}data must be a Buffer, Uint8Array or string`);
  }
  if (explicitHashKey != null && typeof explicitHashKey !== 'string') {
    throw new TypeError(`${where}explicitHashKey must be a decimal string when given`);
  }
}

function checkStream(stream) {
  if (typeof stream !== 'string') throw new TypeError('stream must be a string');
}

/** Decodes ServerMessages into producer calls. */
class Dispatch {
  constructor(producer) {
    this.p = producer;
  }
  hello(m) {
    this.p._onHello(m);
  }
  resultsBegin() {}
  result(id, success, shardId, sequenceNumber, subSequenceNumber, attempts, errorCode, errorMessage, refused) {
    this.p._onResult(id, success, shardId, sequenceNumber, subSequenceNumber, attempts, errorCode, errorMessage, refused);
  }
  accepted(firstIds, counts) {
    this.p._onAccepted(firstIds, counts);
  }
  flushed(id) {
    this.p._onReply(this.p._flushes, id, undefined);
  }
  stats(m) {
    let value;
    try {
      value = JSON.parse(m.json);
    } catch (e) {
      value = m.json;
    }
    this.p._onReply(this.p._statsRequests, m.id, value);
  }
  error(m) {
    this.p._onServerError(m);
  }
}

class Producer extends EventEmitter {
  /**
   * @param {object} [options]
   * @param {string} [options.socketPath] kpld's socket (default: $KPLD_SOCKET, else
   *   /run/kpld/kpld.sock)
   * @param {boolean} [options.busyIfFull] when the daemon's buffers are full, fail records
   *   at once with BusyError instead of waiting for room (default false: wait)
   * @param {number} [options.connectTimeoutMs] how long to wait for the daemon's HelloReply
   *   (default 10000)
   * @param {string} [options.clientName] sent in Hello, shows in the daemon's logs
   */
  constructor(options = {}) {
    super();
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
    const envSocket = process.env.KPLD_SOCKET;
    this.socketPath = options.socketPath || envSocket || DEFAULT_SOCKET_PATH;
    this.busyIfFull = !!options.busyIfFull;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.clientName = options.clientName ?? `kpld-node/${version}`;

    this._builder = new codec.PutFrameBuilder(this.busyIfFull, PRE_HELLO_MAX_FRAME_SIZE);
    this._dispatch = new Dispatch(this);
    this._sendBound = () => this._sendPending();
    this._onTooLargeBound = (id) => this._tooLarge(id);

    this._nextId = 1; // record ids
    this._nextRequestId = 1; // flush and stats ids
    this._batches = []; // outstanding batches, in id order, from _head on
    this._head = 0;
    this._last = null; // batch of the last result: results tend to come in runs
    this._outstanding = 0; // records without a result
    this._flushes = new Map(); // id -> { resolve, reject }
    this._statsRequests = new Map();
    this._control = []; // flush/stats frames waiting for the HelloReply
    this._refs = 0; // outstanding records + requests: the socket is ref()ed while > 0
    this._scheduled = false;
    this._closed = false;
    this._closing = null;

    // Connection state.
    this._sock = null;
    this._ready = false; // HelloReply received
    this._helloTimer = null;
    this._chunks = [];
    this._chunksLen = 0;
    this._need = 4;
    this.serverInfo = null; // the last HelloReply: { protocolVersion, serverVersion, maxFrameSize, maxRecordSize }

    this.counters = { put: 0, succeeded: 0, failed: 0 };
  }

  /** Records put and not yet answered. */
  get outstanding() {
    return this._outstanding;
  }

  /** True while connected to kpld and past the Hello exchange. */
  get connected() {
    return this._ready;
  }

  // -------------------------------------------------------------------------------------------
  // public API

  /**
   * Puts one record. Resolves to { shardId, sequenceNumber, subSequenceNumber, attempts };
   * rejects with RecordFailedError (BusyError for code 'Busy') or ConnectionError.
   */
  putRecord(record) {
    if (this._closed) return Promise.reject(this._closedError());
    try {
      if (record === null || typeof record !== 'object') throw new TypeError('record must be an object');
      checkStream(record.stream);
      checkRecordFields(record.partitionKey, record.data, record.explicitHashKey, record.compression, '');
    } catch (e) {
      return withAccepted(Promise.reject(e), e);
    }
    let b;
    const p = new Promise((resolve, reject) => {
      b = new Batch(SINGLE, this._nextId, 1, resolve, reject);
      this._enqueue(b);
      const sb = codec.streamBytes(record.stream);
      if (!this._builder.append(b.firstId, sb, record.partitionKey, record.explicitHashKey, record.data, compressionOf(record.compression))) {
        this._tooLarge(b.firstId);
      }
      this._afterEnqueue();
    });
    return withAccepted(p, b);
  }

  /**
   * Puts records into one stream. Resolves, once every record has its result, to an array
   * with one entry per record, in order, shaped like Promise.allSettled's:
   * { status: 'fulfilled', value: { shardId, sequenceNumber, subSequenceNumber, attempts } } or
   * { status: 'rejected', reason: RecordFailedError | ConnectionError }.
   * Never rejects because of a record: only for invalid arguments or a closed producer.
   */
  putRecords(stream, records) {
    if (this._closed) return Promise.reject(this._closedError());
    try {
      this._checkRecords(stream, records);
    } catch (e) {
      return withAccepted(Promise.reject(e), e);
    }
    if (records.length === 0) return withAccepted(Promise.resolve([]), null);
    let b;
    const p = new Promise((resolve, reject) => {
      b = new Batch(SETTLED, this._nextId, records.length, resolve, reject);
      this._enqueue(b);
      this._appendAll(b, stream, records);
      this._afterEnqueue();
    });
    return withAccepted(p, b);
  }

  /**
   * Puts records into one stream; the fastest way for many records. Resolves, once every
   * record has its result, to a RecordBatch: `succeeded`, `failed`, `result(i)` (the record's
   * { shardId, sequenceNumber, subSequenceNumber, attempts }, or throws its error),
   * `error(i)`, `failures()` ([index, error] pairs) and `settled()` (what putRecords resolves
   * to). Never rejects because of a record: only for invalid arguments or a closed producer.
   */
  putBatch(stream, records) {
    if (this._closed) return Promise.reject(this._closedError());
    try {
      this._checkRecords(stream, records);
    } catch (e) {
      return withAccepted(Promise.reject(e), e);
    }
    if (records.length === 0) return withAccepted(Promise.resolve(new RecordBatch(0)), null);
    let b;
    const p = new Promise((resolve, reject) => {
      b = new Batch(BATCH, this._nextId, records.length, resolve, reject);
      this._enqueue(b);
      this._appendAll(b, stream, records);
      this._afterEnqueue();
    });
    return withAccepted(p, b);
  }

  /**
   * Fire-and-forget: puts records into one stream and returns nothing. Results still come
   * back: they update `counters`, failures are emitted as 'recordFailed' (err, record,
   * stream) when someone listens. Throws only for invalid arguments or a closed producer.
   * Returns a handle whose accepted() resolves once the daemon has accepted every record.
   */
  send(stream, records) {
    if (this._closed) throw this._closedError();
    this._checkRecords(stream, records);
    if (records.length === 0) return new Sent(null);
    const b = new Batch(SEND, this._nextId, records.length, null, null);
    b.stream = stream;
    b.records = records;
    this._enqueue(b);
    this._appendAll(b, stream, records);
    this._afterEnqueue();
    return new Sent(b);
  }

  /**
   * Resolves once every record put before the call has its result (the daemon also sends its
   * buffered records at once). Rejects with ConnectionError if the connection is lost first.
   */
  flush() {
    if (this._outstanding === 0) return Promise.resolve();
    return this._request(this._flushes, codec.encodeFlush);
  }

  /** Asks the daemon for its state (streams, shards, counters): the parsed StatsReply JSON. */
  stats() {
    if (this._closed) return Promise.reject(this._closedError());
    return this._request(this._statsRequests, codec.encodeStats);
  }

  /**
   * Waits for every outstanding record (as flush() does), then closes the connection. Puts
   * after close() fail with ConnectionError code 'Closed'. Never rejects.
   */
  close() {
    if (this._closing === null) {
      this._closed = true;
      this._closing = this._close();
    }
    return this._closing;
  }

  /**
   * Closes the connection at once, without waiting: records and requests still outstanding
   * fail with ConnectionError code 'Closed' (no 'error' event), as do later puts.
   */
  destroy() {
    this._closed = true;
    if (this._closing === null) this._closing = Promise.resolve();
    if (this._sock !== null) this._lost(this._sock, this._closedError(), false);
  }

  // -------------------------------------------------------------------------------------------
  // putting

  _checkRecords(stream, records) {
    checkStream(stream);
    if (!Array.isArray(records)) throw new TypeError('records must be an array');
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      if (r === null || typeof r !== 'object') throw new TypeError(`records[${i}] must be an object`);
      checkRecordFields(r.partitionKey, r.data, r.explicitHashKey, r.compression, `records[${i}].`);
    }
  }

  _appendAll(b, stream, records) {
    const sb = codec.streamBytes(stream);
    const builder = this._builder;
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      const c = compressionOf(r.compression);
      if (!builder.append(b.firstId + i, sb, r.partitionKey, r.explicitHashKey, r.data, c)) this._tooLarge(b.firstId + i);
    }
  }

  _enqueue(b) {
    this._nextId += b.count;
    this._batches.push(b);
    this._outstanding += b.count;
    this.counters.put += b.count;
    this._addRefs(b.count);
    if (this._sock === null) this._connect();
  }

  _afterEnqueue() {
    if (this._ready && !this._scheduled && !this._builder.empty) {
      this._scheduled = true;
      setImmediate(this._sendBound);
    }
  }

  _sendPending() {
    this._scheduled = false;
    if (!this._ready) return;
    const frames = this._builder.take();
    if (frames.length === 0) return;
    const sock = this._sock;
    if (frames.length === 1) {
      sock.write(frames[0]);
    } else {
      sock.cork();
      for (let i = 0; i < frames.length; i++) sock.write(frames[i]);
      sock.uncork();
    }
  }

  _request(map, encode) {
    return new Promise((resolve, reject) => {
      const id = this._nextRequestId++;
      map.set(id, { resolve, reject });
      this._addRefs(1);
      if (this._sock === null) this._connect();
      const frame = encode(id);
      if (this._ready) {
        this._sendPending();
        this._sock.write(frame);
      } else {
        this._control.push(frame);
      }
    });
  }

  _tooLarge(id) {
    const max = this._builder.maxBody;
    this._settleId(
      id,
      false,
      null,
      new RecordFailedError('RecordTooLarge', `record does not fit in a kpld frame (the daemon takes frames of up to ${max} bytes)`, [], true),
      true,
    );
  }

  // -------------------------------------------------------------------------------------------
  // results

  _find(id) {
    const last = this._last;
    if (last !== null && id >= last.firstId && id < last.firstId + last.count) return last;
    const bs = this._batches;
    let lo = this._head;
    let hi = bs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const b = bs[mid];
      if (id < b.firstId) hi = mid - 1;
      else if (id >= b.firstId + b.count) lo = mid + 1;
      else return (this._last = b);
    }
    return null;
  }

  /** Index in _batches of the first outstanding batch whose ids end after `id`. */
  _batchIndexFrom(id) {
    const bs = this._batches;
    let lo = this._head;
    let hi = bs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const b = bs[mid];
      if (b.firstId + b.count <= id) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  _onAccepted(firstIds, counts) {
    const bs = this._batches;
    for (let k = 0; k < firstIds.length; k++) {
      const first = firstIds[k];
      const n = counts[k];
      if (typeof first !== 'number' || typeof n !== 'number') continue; // above 2^53: not ours
      const end = first + n;
      for (let j = this._batchIndexFrom(first); j < bs.length; j++) {
        const b = bs[j];
        if (b.firstId >= end) break;
        if (b.accFinal !== null) continue;
        const from = Math.max(first, b.firstId) - b.firstId;
        const to = Math.min(end, b.firstId + b.count) - b.firstId;
        const acc = b.acc;
        let added = 0;
        for (let i = from; i < to; i++) {
          if (acc[i] === 0) {
            acc[i] = 1;
            added++;
          }
        }
        if (added > 0) {
          b.nAccepted += added;
          if (b.nAccepted + b.nRefused === b.count) finishAcceptance(b, b.nRefused === 0 ? true : b.refusedErr);
        }
      }
    }
  }

  _onResult(id, success, shardId, sequenceNumber, subSequenceNumber, attempts, errorCode, errorMessage, refused) {
    if (typeof id !== 'number') return;
    const b = this._find(id);
    if (b === null || b.remaining === 0) return; // not ours, or already answered
    if (b.kind === BATCH && success) {
      const i = id - b.firstId;
      if (b.results[i] !== 0) return;
      if (b.acc[i] === 0) markAccepted(b, i); // usually named by an Accepted already
      b.results[i] = 1;
      const rb = b.batch;
      rb._shard[i] = shardId;
      rb._seq[i] = sequenceNumber;
      rb._sub[i] = subSequenceNumber;
      rb._attempts[i] = attempts;
      rb.succeeded++;
      this.counters.succeeded++;
      this._outstanding--;
      this._subRefs(1);
      if (--b.remaining === 0) {
        this._retire(b);
        b.resolve(rb);
      }
      return;
    }
    if (success) {
      this._settle(b, id - b.firstId, true, { shardId, sequenceNumber, subSequenceNumber, attempts }, null, false);
    } else if (b.kind === SEND && !refused && this.listenerCount('recordFailed') === 0) {
      this._settle(b, id - b.firstId, false, null, null, false); // nobody looks: skip building the error
    } else {
      this._settle(b, id - b.firstId, false, null, recordError(errorCode || 'Unknown', errorMessage, attempts, !!refused), !!refused);
    }
  }

  _settleId(id, ok, value, err, refused) {
    const b = this._find(id);
    if (b !== null && b.remaining > 0) this._settle(b, id - b.firstId, ok, value, err, refused);
  }

  _settle(b, i, ok, value, err, refused) {
    // Acceptance first: a result for record i that was already settled returns below before
    // anything else, and marking twice is a no-op.
    if (refused) markRefused(b, i, err);
    else markAccepted(b, i);
    switch (b.kind) {
      case SINGLE:
        b.remaining = 0;
        if (ok) b.resolve(value);
        else b.reject(err);
        break;
      case SETTLED:
        if (b.results[i] !== undefined) return;
        b.results[i] = ok ? { status: 'fulfilled', value } : { status: 'rejected', reason: err };
        if (--b.remaining === 0) b.resolve(b.results);
        break;
      case BATCH:
        if (b.results[i] !== 0) return;
        b.results[i] = 1;
        if (ok) {
          b.batch._shard[i] = value.shardId;
          b.batch._seq[i] = value.sequenceNumber;
          b.batch._sub[i] = value.subSequenceNumber;
          b.batch._attempts[i] = value.attempts;
          b.batch.succeeded++;
        } else {
          b.batch._fail(i, err);
        }
        if (--b.remaining === 0) b.resolve(b.batch);
        break;
      default:
        if (b.results[i] !== 0) return;
        b.results[i] = 1;
        b.remaining--;
    }
    if (ok) this.counters.succeeded++;
    else this.counters.failed++;
    this._outstanding--;
    this._subRefs(1);
    if (b.remaining === 0) this._retire(b);
    // Last: a listener may put, destroy or close.
    if (b.kind === SEND && !ok && err !== null) this._emitRecordFailed(b, i, err);
  }

  _emitRecordFailed(b, i, err) {
    try {
      this.emit('recordFailed', err, b.records !== null ? b.records[i] : undefined, b.stream);
    } catch (e) {
      process.nextTick(() => {
        throw e;
      });
    }
  }

  _retire(b) {
    const bs = this._batches;
    if (this._last === b) this._last = null;
    if (bs[this._head] !== b) return; // retired when the batches before it are
    let h = this._head + 1;
    while (h < bs.length && bs[h].remaining === 0) h++;
    if (h === bs.length) {
      this._batches = [];
      this._head = 0;
    } else if (h > 1024 && h * 2 > bs.length) {
      this._batches = bs.slice(h);
      this._head = 0;
    } else {
      this._head = h;
    }
  }

  _onReply(map, id, value) {
    const req = map.get(id);
    if (req === undefined) return;
    map.delete(id);
    this._subRefs(1);
    req.resolve(value);
  }

  // -------------------------------------------------------------------------------------------
  // connection

  _addRefs(n) {
    if (this._refs === 0 && this._sock !== null) this._sock.ref();
    this._refs += n;
  }

  _subRefs(n) {
    this._refs -= n;
    if (this._refs === 0 && this._sock !== null) this._sock.unref();
  }

  _connect() {
    const sock = net.createConnection({ path: this.socketPath });
    this._sock = sock;
    this._ready = false;
    this._chunks = [];
    this._chunksLen = 0;
    this._need = 4;
    if (this._refs === 0) sock.unref();
    sock.on('data', (chunk) => this._onData(sock, chunk));
    sock.on('error', (err) => this._lost(sock, err));
    sock.on('close', () => this._lost(sock, null));
    sock.write(codec.encodeHello(codec.PROTOCOL_VERSION, this.clientName, true));
    const t = setTimeout(() => {
      if (this._sock === sock && !this._ready) {
        this._lost(sock, new ConnectionError(`kpld at ${this.socketPath} did not answer Hello within ${this.connectTimeoutMs} ms`));
      }
    }, this.connectTimeoutMs);
    t.unref();
    this._helloTimer = t;
  }

  _onData(sock, chunk) {
    if (this._sock !== sock) return;
    let buf;
    if (this._chunksLen === 0) {
      buf = chunk;
    } else {
      this._chunks.push(chunk);
      this._chunksLen += chunk.length;
      if (this._chunksLen < this._need) return;
      buf = Buffer.concat(this._chunks, this._chunksLen);
    }
    this._chunks = [];
    this._chunksLen = 0;
    const len = buf.length;
    let pos = 0;
    while (len - pos >= 4) {
      const n = buf.readUInt32BE(pos);
      if (n > MAX_SERVER_FRAME) {
        this._lost(sock, new ProtocolError(`kpld sent a frame of ${n} bytes, more than this client accepts (${MAX_SERVER_FRAME})`, 'FrameTooLarge'));
        return;
      }
      if (len - pos - 4 < n) break;
      try {
        codec.decodeServerMessage(buf, pos + 4, pos + 4 + n, this._dispatch);
      } catch (e) {
        if (!(e instanceof KpldError)) throw e;
        this._lost(sock, e);
        return;
      }
      if (this._sock !== sock) return; // a fatal Error frame ended the connection
      pos += 4 + n;
    }
    if (pos < len) {
      const rest = buf.subarray(pos);
      this._chunks.push(rest);
      this._chunksLen = rest.length;
      this._need = rest.length >= 4 ? 4 + rest.readUInt32BE(0) : 4;
    }
  }

  _onHello(m) {
    if (this._ready) {
      this._lost(this._sock, new ProtocolError('kpld sent a second HelloReply', 'UnexpectedMessage'));
      return;
    }
    if (m.protocolVersion !== codec.PROTOCOL_VERSION) {
      this._lost(this._sock, new ProtocolError(`kpld speaks protocol version ${m.protocolVersion}, this client ${codec.PROTOCOL_VERSION}`, 'ProtocolVersion'));
      return;
    }
    clearTimeout(this._helloTimer);
    this._helloTimer = null;
    this._ready = true;
    this.serverInfo = m;
    const maxBody = Number(m.maxFrameSize) || DEFAULT_MAX_FRAME_SIZE;
    const b = this._builder;
    if (maxBody !== b.maxBody) {
      const frames = b.take();
      b.setMaxBody(maxBody);
      b.frames = codec.refitFrames(frames, this.busyIfFull, maxBody, this._onTooLargeBound);
    }
    this._sendPending();
    const control = this._control;
    this._control = [];
    for (const frame of control) this._sock.write(frame);
    this.emit('connect', m);
  }

  _onServerError(m) {
    const msg = `kpld error ${m.code}: ${m.message}`;
    const err = PROTOCOL_CODES.has(m.code) ? new ProtocolError(msg, m.code) : new ConnectionError(msg, m.code || 'ConnectionError');
    if (m.fatal) {
      // The daemon closes the connection after this frame: fail everything now.
      this._lost(this._sock, err);
    } else {
      this.emit('warning', err);
    }
  }

  /**
   * The connection `sock` ended (err null: closed by the daemon) or is being ended because of
   * err. Fails everything outstanding and forgets the connection.
   */
  _lost(sock, err, emitError = true) {
    if (this._sock !== sock) return;
    const wasReady = this._ready;
    this._sock = null;
    this._ready = false;
    clearTimeout(this._helloTimer);
    this._helloTimer = null;
    this._chunks = [];
    this._chunksLen = 0;
    sock.destroy();

    let primary = err;
    if (primary === null) {
      primary = new ConnectionError(
        wasReady
          ? `connection to kpld at ${this.socketPath} closed by the daemon`
          : `connection to kpld at ${this.socketPath} closed before the Hello exchange`,
      );
    } else if (!(primary instanceof KpldError)) {
      primary = new ConnectionError(
        wasReady
          ? `connection to kpld at ${this.socketPath} lost: ${err.message}`
          : `cannot connect to kpld at ${this.socketPath}: ${connectHint(err)}`,
        'ConnectionError',
        { cause: err },
      );
    }
    const forRecords =
      primary instanceof ConnectionError
        ? primary
        : new ConnectionError(`connection to kpld at ${this.socketPath} ended: ${primary.message}`, 'ConnectionError', { cause: primary });

    // Fail everything that belonged to the connection.
    this._builder.reset();
    this._control = [];
    this._scheduled = false; // a pending setImmediate finds nothing to send
    const bs = this._batches;
    const head = this._head;
    this._batches = [];
    this._head = 0;
    this._last = null;
    let failed = 0;
    for (let k = head; k < bs.length; k++) {
      const b = bs[k];
      // Records neither accepted nor refused may or may not be in the daemon: resend them.
      finishAcceptance(b, forRecords);
      if (b.remaining === 0) continue;
      failed += b.remaining;
      if (b.kind === SINGLE) {
        b.remaining = 0;
        b.reject(forRecords);
      } else if (b.kind === SETTLED) {
        const rs = b.results;
        for (let i = 0; i < rs.length; i++) if (rs[i] === undefined) rs[i] = { status: 'rejected', reason: forRecords };
        b.remaining = 0;
        b.resolve(rs);
      } else if (b.kind === BATCH) {
        const rs = b.results;
        for (let i = 0; i < rs.length; i++) if (rs[i] === 0) b.batch._fail(i, forRecords);
        b.remaining = 0;
        b.resolve(b.batch);
      } else {
        b.remaining = 0;
      }
    }
    this.counters.failed += failed;
    this._outstanding -= failed;
    let requests = 0;
    for (const map of [this._flushes, this._statsRequests]) {
      for (const req of map.values()) req.reject(forRecords);
      requests += map.size;
      map.clear();
    }
    this._refs -= failed + requests;

    if (emitError && this.listenerCount('error') > 0) this.emit('error', primary);
  }

  _closedError() {
    return new ConnectionError('the kpld producer is closed', 'Closed');
  }

  async _close() {
    if (this._outstanding > 0) {
      try {
        await this._request(this._flushes, codec.encodeFlush);
      } catch (e) {
        // The connection was lost: everything outstanding has failed already.
      }
    }
    const sock = this._sock;
    if (sock === null) return;
    // Every record and flush was answered (records still outstanding now could only be a
    // daemon bug: they fail with code 'Closed').
    const closed = new Promise((resolve) => sock.once('close', resolve));
    this._lost(sock, this._closedError(), false);
    await closed;
  }
}

/** What to check for a failed connect, as the Python client says it. */
function connectHint(err) {
  switch (err.code) {
    case 'ENOENT':
      return `no such socket (is kpld running? set socketPath or $KPLD_SOCKET) (${err.message})`;
    case 'ECONNREFUSED':
      return `connection refused (a stale socket file: kpld is not running) (${err.message})`;
    case 'EACCES':
      return `permission denied (is this user allowed to use the socket?) (${err.message})`;
    default:
      return err.message;
  }
}

module.exports = { Producer, RecordBatch, Sent, DEFAULT_SOCKET_PATH };

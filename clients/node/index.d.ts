// Type declarations of kpld, the Node.js client of the kpld Kinesis producer daemon.
/// <reference types="node" />

import { EventEmitter } from 'events';

export interface ProducerOptions {
  /** kpld's Unix socket. Default: $KPLD_SOCKET, else /run/kpld/kpld.sock. */
  socketPath?: string;
  /**
   * When kpld's buffers are full, fail records at once with BusyError instead of waiting for
   * room (the default waits: kpld stops reading the socket until there is room).
   */
  busyIfFull?: boolean;
  /** How long to wait for kpld's answer to Hello on each connection. Default 10000 ms. */
  connectTimeoutMs?: number;
  /** Sent to kpld in Hello, shows in its logs. Default "kpld-node/VERSION". */
  clientName?: string;
}

/** Record data: bytes, or a string sent as UTF-8. */
export type RecordData = Buffer | Uint8Array | string;

/**
 * How kpld compresses a record's data before aggregating it ("default": the stream's
 * `compression` setting). Consumers receive the compressed bytes.
 */
export type Compression = 'default' | 'none' | 'gzip' | 'zlib';

export interface PutRecordInput {
  stream: string;
  /** 1 to 256 Unicode characters. */
  partitionKey: string;
  data: RecordData;
  /** Decimal 0..2^128-1; routes the record instead of MD5(partitionKey). */
  explicitHashKey?: string | null;
  /** Overrides the stream's compression setting for this record. */
  compression?: Compression | null;
}

export interface BatchRecord {
  /** 1 to 256 Unicode characters. */
  partitionKey: string;
  data: RecordData;
  /** Decimal 0..2^128-1; routes the record instead of MD5(partitionKey). */
  explicitHashKey?: string | null;
  /** Overrides the stream's compression setting for this record. */
  compression?: Compression | null;
}

/** One attempt kpld made to send a record, in order. */
export interface Attempt {
  success: boolean;
  /** Empty on success. */
  errorCode: string;
  errorMessage: string;
  /** Milliseconds from the end of the previous attempt (or the record's arrival) to this one. */
  delayMs: number;
  /** Milliseconds the PutRecords call of this attempt took. */
  durationMs: number;
}

export interface PutRecordResult {
  shardId: string;
  sequenceNumber: string;
  /** The record's index inside its KPL aggregate (0 when sent alone). */
  subSequenceNumber: number;
  attempts: Attempt[];
}

export type PutRecordSettled =
  | { status: 'fulfilled'; value: PutRecordResult }
  | { status: 'rejected'; reason: RecordFailedError | ConnectionError };

/** The daemon's HelloReply. */
export interface ServerInfo {
  protocolVersion: number;
  serverVersion: string;
  /** Largest frame body kpld accepts. */
  maxFrameSize: number;
  /** Largest data + partition key of one record. */
  maxRecordSize: number;
}

export interface ProducerCounters {
  /** Records put. */
  put: number;
  /** Records that succeeded. */
  succeeded: number;
  /** Records that failed (including those failed by a lost connection). */
  failed: number;
}

export declare const DEFAULT_SOCKET_PATH: string;

/**
 * What the put methods return: their promise, plus accepted(), which resolves once the daemon
 * has accepted every record of the call (in its buffers, or its spool for a stream with
 * durability = "disk"; docs/protocol.md, "Acceptance"), and rejects with the error of a record
 * it did not accept: its RecordFailedError with `refused` true (the lowest index refused), or
 * the ConnectionError of a connection lost first (those records may or may not be in the
 * daemon: resend them). Only the promise the method returned has it, not those chained from it.
 */
export interface Accepting<T> extends Promise<T> {
  accepted(): Promise<void>;
}

/** What send() returns: accepted() as on the promise of the other put methods. */
export declare class Sent {
  accepted(): Promise<void>;
}

export declare class Producer extends EventEmitter {
  constructor(options?: ProducerOptions);
  readonly socketPath: string;
  readonly busyIfFull: boolean;
  /** The last HelloReply, or null before the first connection. */
  readonly serverInfo: ServerInfo | null;
  readonly counters: ProducerCounters;
  /** Records put and not yet answered. */
  readonly outstanding: number;
  /** True while connected and past the Hello exchange. */
  readonly connected: boolean;

  /**
   * Puts one record. Rejects with RecordFailedError (BusyError when code is "Busy") or
   * ConnectionError.
   */
  putRecord(record: PutRecordInput): Accepting<PutRecordResult>;

  /**
   * Puts records into one stream (sent together, in one frame when they fit). Resolves once all
   * have results, to one Promise.allSettled-style entry per record, in order. Rejects only for
   * invalid arguments or a closed producer.
   */
  putRecords(stream: string, records: readonly BatchRecord[]): Accepting<PutRecordSettled[]>;

  /**
   * Puts records into one stream; the fastest way for many records. Resolves once all have
   * results, to a RecordBatch holding them compactly. Rejects only for invalid arguments or a
   * closed producer.
   */
  putBatch(stream: string, records: readonly BatchRecord[]): Accepting<RecordBatch>;

  /**
   * Fire-and-forget: puts records into one stream; results only update `counters` and failures
   * are emitted as 'recordFailed'. Throws only for invalid arguments or a closed producer.
   * The returned handle's accepted() tells when the daemon has accepted the records.
   */
  send(stream: string, records: readonly BatchRecord[]): Sent;

  /** Resolves once every record put before it has its result. */
  flush(): Promise<void>;

  /** kpld's state (streams, shards, counters), as documented in docs/protocol.md. */
  stats(): Promise<unknown>;

  /** Waits for outstanding records, then disconnects. Later puts fail with code "Closed". */
  close(): Promise<void>;

  /**
   * Disconnects at once: outstanding records and requests fail with ConnectionError code
   * "Closed" (no 'error' event), as do later puts.
   */
  destroy(): void;

  /** Connection lost or not made; emitted only when a listener is attached. */
  on(event: 'error', listener: (err: ConnectionError | ProtocolError) => void): this;
  /** Connected and past the Hello exchange. */
  on(event: 'connect', listener: (info: ServerInfo) => void): this;
  /** A non-fatal Error frame from kpld. */
  on(event: 'warning', listener: (err: KpldError) => void): this;
  /** A record put with send() failed. */
  on(event: 'recordFailed', listener: (err: RecordFailedError, record: BatchRecord | undefined, stream: string) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: 'error', listener: (err: ConnectionError | ProtocolError) => void): this;
  once(event: 'connect', listener: (info: ServerInfo) => void): this;
  once(event: 'warning', listener: (err: KpldError) => void): this;
  once(event: 'recordFailed', listener: (err: RecordFailedError, record: BatchRecord | undefined, stream: string) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** The results of one putBatch call; result objects are built when read. */
export declare class RecordBatch {
  /** Records in the batch, in the order given. */
  readonly length: number;
  /** Records whose final result is a success. */
  readonly succeeded: number;
  /** Records whose final result is a failure. */
  readonly failed: number;
  /** Record i's result; throws its error (RecordFailedError, BusyError, ConnectionError). */
  result(i: number): PutRecordResult;
  /** Record i's error, or null when it succeeded. */
  error(i: number): RecordFailedError | ConnectionError | null;
  /** [index, error] of every failed record, in index order. */
  failures(): Array<[number, RecordFailedError | ConnectionError]>;
  /** Every record's outcome, shaped as putRecords resolves them. */
  settled(): PutRecordSettled[];
}

/** Root of every error this package raises. */
export declare class KpldError extends Error {
  code: string;
}

/**
 * The connection to kpld could not be made or was lost (code "ConnectionError"), the producer is
 * closed (code "Closed"), or kpld ended the connection with an error code (e.g. "ShuttingDown").
 */
export declare class ConnectionError extends KpldError {}

/** kpld answered the record with a failure; `code` is its error code. */
export declare class RecordFailedError extends KpldError {
  attempts: Attempt[];
  /** The daemon never accepted the record (invalid, Busy, ...): resending makes no duplicate. */
  refused: boolean;
}

/** kpld's buffers were full and the producer has busyIfFull set (code "Busy"). */
export declare class BusyError extends RecordFailedError {}

/** A frame could not be understood by this client or by kpld. */
export declare class ProtocolError extends KpldError {}

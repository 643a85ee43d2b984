// Error classes of the kpld client. One root (KpldError) with subclasses shaped by what the
// caller decides: retry later (ConnectionError, BusyError), fix the record (RecordFailedError),
// report a bug (ProtocolError). Every error has a string `code`.
'use strict';

class KpldError extends Error {
  constructor(message, code, options) {
    super(message, options);
    this.code = code;
  }
}

/**
 * The connection to kpld could not be made or was lost. Records in flight on that connection
 * fail with it; the next put connects again. `code` is 'ConnectionError', 'Closed' (the
 * producer was closed), or the server's fatal error code (e.g. 'ShuttingDown').
 */
class ConnectionError extends KpldError {
  constructor(message, code = 'ConnectionError', options) {
    super(message, code, options);
  }
}

/**
 * kpld answered a record with a failure. `code` is the daemon's error code (e.g.
 * 'InvalidPartitionKey', 'Expired', 'ResourceNotFoundException'), `attempts` every attempt the
 * daemon made to send the record (empty when it was refused before any attempt). `refused` is
 * true when the daemon never accepted the record (invalid, Busy, ShuttingDown before it was
 * taken, its spool full, or it never left this process): sending it again makes no duplicate.
 */
class RecordFailedError extends KpldError {
  constructor(code, message, attempts, refused = false) {
    super(message || code, code);
    this.attempts = attempts || [];
    this.refused = refused;
  }
}

/** The daemon's buffers were full and the producer was created with `busyIfFull: true`. */
class BusyError extends RecordFailedError {}

/** A frame could not be understood (by us or by the daemon): a bug in the client or daemon. */
class ProtocolError extends KpldError {
  constructor(message, code = 'ProtocolError', options) {
    super(message, code, options);
  }
}

for (const cls of [KpldError, ConnectionError, RecordFailedError, BusyError, ProtocolError]) {
  Object.defineProperty(cls.prototype, 'name', { value: cls.name, writable: true, configurable: true });
}

module.exports = { KpldError, ConnectionError, RecordFailedError, BusyError, ProtocolError };

// kpld: Node.js client for the kpld Kinesis producer daemon. See README.md.
'use strict';

const { Producer, RecordBatch, Sent, DEFAULT_SOCKET_PATH } = require('./lib/producer');
const { KpldError, ConnectionError, RecordFailedError, BusyError, ProtocolError } = require('./lib/errors');

module.exports = {
  Producer,
  RecordBatch,
  Sent,
  DEFAULT_SOCKET_PATH,
  KpldError,
  ConnectionError,
  RecordFailedError,
  BusyError,
  ProtocolError,
};

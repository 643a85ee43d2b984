// Type declarations of kpld's ESM entry point (index.mjs): the same as the CommonJS one.
import kpld from './index.js';

export {
  Producer,
  RecordBatch,
  Sent,
  DEFAULT_SOCKET_PATH,
  KpldError,
  ConnectionError,
  RecordFailedError,
  BusyError,
  ProtocolError,
} from './index.js';
export type {
  ProducerOptions,
  RecordData,
  Compression,
  PutRecordInput,
  BatchRecord,
  Attempt,
  PutRecordResult,
  PutRecordSettled,
  ServerInfo,
  ProducerCounters,
  Accepting,
} from './index.js';
export default kpld;

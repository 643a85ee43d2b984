// ESM entry point: the same classes as the CommonJS one (index.js).
import kpld from './index.js';

export const {
  Producer,
  RecordBatch,
  Sent,
  DEFAULT_SOCKET_PATH,
  KpldError,
  ConnectionError,
  RecordFailedError,
  BusyError,
  ProtocolError,
} = kpld;
export default kpld;

"""kpld: the Python client of the kpld Kinesis producer daemon.

Applications hand records to the daemon over its Unix socket; the daemon
predicts each record's shard, aggregates, sends, retries and answers every
record with a result::

    from kpld import Producer, RecordFailed

    with Producer() as p:                     # $KPLD_SOCKET or /run/kpld/kpld.sock
        fut = p.put_record("stream", b"data", partition_key="k")
        r = fut.result(timeout=30)            # r.shard_id, r.sequence_number, ...

Layout:
  errors.py      the exception tree (KpldError at the root)
  types.py       Result, Attempt, ServerInfo, ProducerStats
  _producer.py   Producer (threads + concurrent.futures)
  aio.py         AsyncProducer (asyncio)
  _connection.py one socket: handshake, reader thread, records in flight
  _codec.py      framing; hand-written PutRequest encoder / Results decoder
  _schema.py     the .proto as data; generic reference codec; JSON mapping
  _future.py     RecordFuture, a lighter concurrent.futures.Future
  _batch.py      RecordBatch, one waitable per put_batch, results decoded when read
  _acceptance.py accepted record ids per connection (Accepted runs); what accepted() decides
"""

from ._batch import RecordBatch
from ._producer import DEFAULT_SOCKET_PATH, Producer, __version__
from .errors import Busy, ConnectionError, KpldError, ProtocolError, RecordFailed
from .types import Attempt, Compression, ProducerStats, Result, ServerInfo

__all__ = [
    "Producer",
    "RecordBatch",
    "Result",
    "Attempt",
    "ServerInfo",
    "ProducerStats",
    "Compression",
    "KpldError",
    "ConnectionError",
    "ProtocolError",
    "RecordFailed",
    "Busy",
    "DEFAULT_SOCKET_PATH",
    "__version__",
]

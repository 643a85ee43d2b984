"""The synchronous :class:`Producer`: thread-safe puts, futures, flush, reconnect.

Concurrency model: one write lock per producer serialises id allocation,
connecting and sending, so any number of threads may put at once; one reader
thread per connection (see ``_connection``) decodes results and resolves
futures. The reader never takes the write lock on its hot path, so a writer
blocked by the daemon's backpressure can never stall the results that would
release it.

Connecting is lazy: the first put (or :meth:`Producer.connect`) connects, and
after a lost connection the next put connects again.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from itertools import repeat
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _codec
from ._batch import RecordBatch, fail_owner
from ._connection import Connection, Counters, Waiter, sendall
from ._future import RecordFuture
from .errors import ConnectionError, record_failure
from .types import Compression, ProducerStats, Result, ServerInfo

__all__ = ["Producer", "DEFAULT_SOCKET_PATH", "resolve_socket_path"]

__version__ = "0.1.0"

#: Where the daemon listens unless told otherwise.
DEFAULT_SOCKET_PATH = "/run/kpld/kpld.sock"

Data = Union[bytes, bytearray, memoryview, str]
PathLike = Union[str, "os.PathLike[str]"]
RecordItem = Union[
    Tuple[str, Data],
    Tuple[str, Data, Optional[Union[str, int]]],
    Tuple[str, Data, Optional[Union[str, int]], Optional[Union[Compression, str]]],
    Mapping[str, Any],
]


def resolve_socket_path(socket_path: Optional[PathLike]) -> str:
    """``socket_path``, else ``$KPLD_SOCKET``, else ``/run/kpld/kpld.sock``."""
    if socket_path is not None:
        return os.fspath(socket_path)
    return os.environ.get("KPLD_SOCKET") or DEFAULT_SOCKET_PATH


class Producer:
    """Hands records to the kpld daemon over its Unix socket.

    ``socket_path``: the daemon's socket; ``None`` means ``$KPLD_SOCKET``,
    else ``/run/kpld/kpld.sock``.

    ``busy_if_full``: when the daemon's buffers are full it normally stops
    reading, and puts block until there is room (backpressure). With
    ``busy_if_full=True`` the records fail at once with :class:`kpld.Busy`
    instead.

    ``connect_timeout``: seconds to wait for the daemon's handshake.

    The producer connects on first use (or :meth:`connect`) and reconnects on
    the next put after the connection was lost. It is safe to use from many
    threads. Use it as a context manager, or call :meth:`close`, so that
    outstanding records get their results before the process moves on.

    After ``os.fork()`` the child's producer drops the inherited connection
    (the parent keeps it) and connects anew on its first put.
    """

    def __init__(
        self,
        socket_path: Optional[PathLike] = None,
        *,
        busy_if_full: bool = False,
        connect_timeout: Optional[float] = 10.0,
        client_name: str = f"kpld-python/{__version__}",
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.busy_if_full = bool(busy_if_full)
        self.connect_timeout = connect_timeout
        self.client_name = client_name
        self._lock = threading.Lock()
        self._conn: Optional[Connection] = None
        self._next_id = 1
        self._closed = False
        self._counters = Counters()
        self._pid = os.getpid()

    # -- connection management --------------------------------------------

    def _connection(self) -> Connection:
        """The live connection, connecting if there is none (lock held)."""
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        if self._closed:
            raise ConnectionError("the producer is closed")
        self._conn = conn = Connection.open(
            self.socket_path, self.client_name, self.connect_timeout, self._lock, self._counters
        )
        return conn

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock = threading.Lock()  # the parent's could have been held at fork time
            old, self._conn = self._conn, None
            self._counters = Counters()
            if old is not None:
                owned = list(old.pending.items())
                old.forget()
                for rid, owner in owned:
                    if owner.__class__ is RecordBatch or not owner.done():
                        fail_owner(
                            owner, rid, lambda: ConnectionError("the process forked; this record belongs to the parent")
                        )

    def connect(self) -> ServerInfo:
        """Connect now (if not connected) and return what the daemon said in
        its handshake. Raises :class:`kpld.ConnectionError` when the daemon
        cannot be reached, :class:`kpld.ProtocolError` when it refuses us."""
        self._check_fork()
        with self._lock:
            return self._connection().info

    @property
    def server_info(self) -> Optional[ServerInfo]:
        """The current connection's handshake reply, or None when not connected."""
        conn = self._conn
        return conn.info if conn is not None and conn.alive else None

    # -- putting -----------------------------------------------------------

    def put_record(
        self,
        stream: str,
        data: Data,
        partition_key: str,
        explicit_hash_key: Optional[Union[str, int]] = None,
        *,
        compression: Optional[Union[Compression, str]] = None,
    ) -> "Future[Result]":
        """Hand one record to the daemon; returns a future of its :class:`Result`.

        ``data`` may be bytes, bytearray, memoryview or str (sent as UTF-8).
        ``explicit_hash_key`` (a decimal string or int in 0..2**128-1) routes
        the record instead of the MD5 of its partition key. ``compression``
        (a :class:`kpld.Compression` or "none"/"gzip"/"zlib") overrides the
        stream's compression setting in the daemon for this record.

        The future's ``accepted(timeout=None)`` returns once the daemon has
        accepted the record (see :meth:`kpld.RecordBatch.accepted`; raises
        the record's refusal or :class:`kpld.ConnectionError`).

        The future's ``result()`` returns the :class:`Result` or raises
        :class:`kpld.RecordFailed` (the daemon's final failure, e.g. code
        ``"InvalidPartitionKey"``), :class:`kpld.Busy`, or
        :class:`kpld.ConnectionError` (the connection was lost before the
        record's result arrived).

        Blocks while the daemon applies backpressure. Raises
        :class:`kpld.ConnectionError` when the daemon cannot be reached (the
        record was not handed over) and TypeError for wrongly typed
        arguments; the values themselves are validated by the daemon.
        """
        return self._put(stream, ((partition_key, data, explicit_hash_key, compression),))[0]

    def put_records(self, stream: str, records: Iterable[RecordItem]) -> "List[Future[Result]]":
        """Hand a batch of records to the daemon; the fast path.

        ``records``: ``(partition_key, data)`` tuples, ``(partition_key, data,
        explicit_hash_key)`` or ``(partition_key, data, explicit_hash_key,
        compression)`` tuples, or dicts with keys ``partition_key``, ``data``
        and optionally ``explicit_hash_key`` and ``compression``. Returns one future per
        record, in order. The batch goes out as one PutRequest frame, split
        into several when it exceeds the daemon's frame limit.

        Raises like :meth:`put_record`; a wrongly typed record raises
        TypeError before any record of the batch is sent.
        """
        return self._put(stream, records)

    def _put(self, stream: str, records: Iterable[Any]) -> "List[Future[Result]]":
        def owners(conn: Connection, first: int, count: int) -> Any:
            runs = conn.accepted
            futures: List[Any] = [RecordFuture(runs, rid) for rid in range(first, first + count)]
            return futures, futures

        return self._hand_over(stream, records, owners)  # type: ignore[no-any-return]

    def _hand_over(self, stream: str, records: Iterable[Any], owners: Any) -> Any:
        """Encodes ``records`` and sends them, under the lock (ids are handed out in
        order). ``owners(conn, first, count)`` returns what the call returns and, for
        each id, what its result goes to."""
        if self._pid != os.getpid():
            self._check_fork()
        with self._lock:
            conn = self._connection()
            first = self._next_id
            batch = _codec.encode_put_frames(first, stream, records, self.busy_if_full, conn.max_frame_size)
            count = batch.count
            self._next_id = first + count
            ids = range(first, first + count)
            out, each = owners(conn, first, count)
            conn.pending.update(zip(ids, each))
            if batch.too_large:
                self._fail_too_large(conn, batch)
            self._counters.put += count
            if batch.frames:
                try:
                    sendall(conn, batch.frames)
                except OSError as e:
                    conn.fail_sent(ids, e)
        return out

    def put_batch(self, stream: str, records: Iterable[RecordItem]) -> RecordBatch:
        """Hand a batch of records to the daemon with one waitable for them all:
        the fastest way in, for many records.

        ``records`` as for :meth:`put_records`. Returns a
        :class:`kpld.RecordBatch`: ``wait()`` blocks until every record has
        its final result, ``accepted()`` until the daemon accepted them all,
        ``failed`` counts the failures, ``result(i)`` returns record ``i``'s
        :class:`Result` or raises its failure (as the future of
        :meth:`put_records` would), ``failures()`` lists them.
        Results are kept as the bytes the daemon sent and decoded when read.

        Blocks and raises like :meth:`put_records`.
        """

        def owners(conn: Connection, first: int, count: int) -> Any:
            rb = RecordBatch(first, count, conn.accepted)
            conn.has_batches = True
            return rb, repeat(rb, count)

        return self._hand_over(stream, records, owners)  # type: ignore[no-any-return]

    def _fail_too_large(self, conn: Connection, batch: _codec.PutBatch) -> None:
        for index in batch.too_large:
            rid = batch.first_id + index
            fail_owner(
                conn.pending.pop(rid),
                rid,
                lambda: record_failure(
                    "RecordTooLarge",
                    f"the encoded record exceeds the daemon's frame limit of {conn.max_frame_size} bytes",
                    refused=True,
                ),
            )
        self._counters.add(0, len(batch.too_large))

    # -- flush, stats, close ------------------------------------------------

    def _request(self, encode: Any, timeout: Optional[float]) -> Any:
        """Send a flush/stats request and wait for its reply."""
        send_error: Optional[OSError] = None
        with self._lock:
            conn = self._connection()
            if conn.in_reader_thread:
                raise RuntimeError("cannot wait for the daemon from a result callback (the reader thread)")
            rid = self._next_id
            self._next_id += 1
            waiter = Waiter()
            conn.waiters[rid] = waiter
            try:
                conn.sock.sendall(encode(rid))
            except OSError as e:
                send_error = e
        if send_error is not None:
            conn.abort()
            conn.finished.wait()  # the reader fails what was in flight, this waiter included
            raise ConnectionError(f"connection to kpld lost: {send_error}") from send_error
        if not waiter.event.wait(timeout):
            conn.waiters.pop(rid, None)
            raise FuturesTimeoutError(f"no answer from kpld within {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        return waiter.value

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every record put so far (by any thread) has its final
        result; the daemon sends what it buffers at once.

        Raises :class:`kpld.ConnectionError` when the connection is lost
        before the daemon confirmed the flush (the records in flight then
        fail with ConnectionError), and ``concurrent.futures.TimeoutError``
        when ``timeout`` seconds pass first. Returns at once when nothing
        is in flight.
        """
        if self._pid != os.getpid():
            self._check_fork()
        conn = self._conn
        if conn is None:
            return
        if not conn.alive:
            conn.finished.wait(timeout)  # the records in flight are being failed
            return
        if not conn.pending:
            return
        self._request(_codec.encode_flush, timeout)

    def daemon_stats(self, timeout: Optional[float] = 30.0) -> Dict[str, Any]:
        """The daemon's state (streams, shards, counters) as a dict, from its
        StatsReply; the shape is documented in the daemon's docs/protocol.md."""
        import json

        stats: Dict[str, Any] = json.loads(self._request(_codec.encode_stats, timeout))
        return stats

    def stats(self) -> ProducerStats:
        """This producer's record counters (since it was created)."""
        conn = self._conn
        c = self._counters
        with c.lock:
            return ProducerStats(
                records_put=c.put,
                records_succeeded=c.succeeded,
                records_failed=c.failed,
                records_in_flight=len(conn.pending) if conn is not None else 0,
            )

    def close(self, timeout: Optional[float] = None) -> None:
        """Flush (waiting up to ``timeout`` seconds), then close the connection.

        Records still without a result after the timeout fail with
        :class:`kpld.ConnectionError`. Idempotent; puts after close raise
        :class:`kpld.ConnectionError`. A lost connection is not an error
        here (its records already failed with ConnectionError).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn = self._conn
        if conn is None:
            return
        try:
            if not conn.in_reader_thread:
                self.flush(timeout)
        except (ConnectionError, FuturesTimeoutError):
            pass
        finally:
            conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self.server_info else "not connected")
        return f"<kpld.Producer {self.socket_path!r} {state}>"

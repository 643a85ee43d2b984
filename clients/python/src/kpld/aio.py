"""AsyncProducer: the asyncio client, on asyncio streams over the Unix socket.

::

    from kpld.aio import AsyncProducer

    async with AsyncProducer() as p:
        r = await p.put_record("stream", b"data", partition_key="k")   # a Result
        fut = p.put_record_nowait("stream", b"more", partition_key="k")  # an asyncio.Future
        await p.flush()

Everything runs on the event loop that first uses the producer: a reader
task decodes results and resolves the futures; no threads, no locks.

Connecting is lazy. ``put_record_nowait``/``put_records_nowait`` never wait:
without a connection they queue the records and start connecting (their
futures fail with :class:`kpld.ConnectionError` if that fails); with one
they write to the transport's buffer without waiting for room. The awaited
``put_record``/``put_records`` also wait for the socket to drain, which is
how the daemon's backpressure reaches the caller.

The futures are :class:`RecordFuture` s (``asyncio.Future`` subclasses):
``await fut.accepted()`` waits until the daemon has accepted the record.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple, Union

from . import _codec
from ._acceptance import ACCEPTED, AcceptedRuns, verdict
from ._connection import connect_error, handshake_reply
from ._producer import Data, PathLike, RecordItem, __version__, resolve_socket_path
from .errors import ConnectionError, KpldError, ProtocolError, record_failure
from .types import Compression, ProducerStats, Result, ServerInfo

__all__ = ["AsyncProducer", "RecordFuture"]

_READ_SIZE = 1 << 18


class _Acceptance:
    """A connection's accepted ids, and the accepted() calls sleeping until
    the next Accepted frame (or the connection's end)."""

    __slots__ = ("runs", "sleepers")

    def __init__(self, pending: Dict[int, Any]) -> None:
        self.runs = AcceptedRuns(pending)
        self.sleepers: "List[asyncio.Future[None]]" = []

    def wake(self) -> None:
        sleepers, self.sleepers = self.sleepers, []
        for w in sleepers:
            if not w.done():
                w.set_result(None)


#: Acceptance of futures not yet written to a connection: nothing accepted.
_NO_ACCEPTANCE = _Acceptance({})


if TYPE_CHECKING:
    _FutureBase = asyncio.Future[Result]
else:
    _FutureBase = asyncio.Future


class RecordFuture(_FutureBase):
    """The future of one record: its :class:`kpld.Result`, or its failure;
    and ``await accepted()``."""

    __slots__ = ("_rid", "_acc")
    #: The record's id, and its connection's acceptance (set once written).
    _rid: int
    _acc: _Acceptance

    def _acceptance(self) -> Any:
        if self._rid in self._acc.runs:
            return ACCEPTED
        if self.done():
            if self.cancelled():
                return asyncio.CancelledError()
            exc = self.exception()
            return verdict(self.result() if exc is None else exc)
        return None

    async def accepted(self, timeout: Optional[float] = None) -> None:
        """Wait until the daemon has accepted the record (in its buffers, or
        its spool for a ``durability = "disk"`` stream).

        Raises the record's :class:`kpld.RecordFailed` (``refused`` True)
        when the daemon refused it, :class:`kpld.ConnectionError` when the
        connection was lost before the daemon accepted it (resend it), and
        ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        loop = self.get_loop()
        deadline = None if timeout is None else loop.time() + timeout
        v = self._acceptance()
        while v is None:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise asyncio.TimeoutError(f"record {self._rid} not accepted by kpld within {timeout} s")
            w: "asyncio.Future[None]" = loop.create_future()
            acc = self._acc
            acc.sleepers.append(w)
            await asyncio.wait((w, self), timeout=left, return_when=asyncio.FIRST_COMPLETED)
            v = self._acceptance()
        if v is not ACCEPTED:
            raise v


class _AioConnection:
    """One stream connection; same ownership rule as the sync Connection:
    whoever removes a future from ``pending`` resolves it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: ServerInfo,
        frames: _codec.FrameReader,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.info = info
        self.max_frame_size = info.max_frame_size or _codec.DEFAULT_MAX_FRAME_SIZE
        self.frames = frames
        self.pending: Dict[int, "RecordFuture"] = {}
        self.acceptance = _Acceptance(self.pending)
        self.waiters: Dict[int, "asyncio.Future[Any]"] = {}
        self.alive = True
        self.closing = False
        self.fatal: Optional[Dict[str, Any]] = None
        self.finished = asyncio.Event()
        self.task: Optional["asyncio.Task[None]"] = None


def _futures(loop: asyncio.AbstractEventLoop, first: int, count: int) -> List[RecordFuture]:
    out = []
    for rid in range(first, first + count):
        f = RecordFuture(loop=loop)
        f._rid = rid
        f._acc = _NO_ACCEPTANCE
        out.append(f)
    return out


class AsyncProducer:
    """Hands records to the kpld daemon from asyncio code.

    Same options as :class:`kpld.Producer`: ``socket_path`` (None:
    ``$KPLD_SOCKET``, else ``/run/kpld/kpld.sock``), ``busy_if_full``,
    ``connect_timeout``, ``client_name``. Use ``async with`` or
    ``await close()``.
    """

    def __init__(
        self,
        socket_path: Optional[PathLike] = None,
        *,
        busy_if_full: bool = False,
        connect_timeout: Optional[float] = 10.0,
        client_name: str = f"kpld-python-asyncio/{__version__}",
    ) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.busy_if_full = bool(busy_if_full)
        self.connect_timeout = connect_timeout
        self.client_name = client_name
        self._conn: Optional[_AioConnection] = None
        self._connecting: Optional["asyncio.Task[_AioConnection]"] = None
        # batches put while connecting: (stream, records, first_id, futures)
        self._backlog: List[Tuple[str, List[Any], int, List["RecordFuture"]]] = []
        self._next_id = 1
        self._closed = False
        self._put = 0
        self._succeeded = 0
        self._failed = 0

    # -- connection management --------------------------------------------

    async def connect(self) -> ServerInfo:
        """Connect now (if not connected); returns the daemon's handshake reply."""
        return (await self._connection()).info

    @property
    def server_info(self) -> Optional[ServerInfo]:
        conn = self._conn
        return conn.info if conn is not None and conn.alive else None

    async def _connection(self) -> _AioConnection:
        conn = self._conn
        if conn is not None and conn.alive:
            return conn
        if self._closed:
            raise ConnectionError("the producer is closed")
        return await self._start_connecting()

    def _start_connecting(self) -> "asyncio.Task[_AioConnection]":
        if self._connecting is None:
            task = asyncio.ensure_future(self._connect_and_send_backlog())
            # Its failure reaches the queued records' futures; mark it
            # retrieved so asyncio does not also log it as unhandled.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._connecting = task
        return self._connecting

    async def _connect_and_send_backlog(self) -> _AioConnection:
        try:
            conn = await self._open()
        except BaseException as e:
            backlog, self._backlog = self._backlog, []
            for _, _, _, futures in backlog:
                for fut in futures:
                    if not fut.done():
                        fut.set_exception(
                            e if isinstance(e, KpldError) else ConnectionError(f"cannot connect to kpld: {e!r}")
                        )
                self._failed += len(futures)
            raise
        finally:
            self._connecting = None
        self._conn = conn
        backlog, self._backlog = self._backlog, []
        for stream, records, first_id, futures in backlog:
            self._write_batch(conn, stream, records, first_id, futures)
        return conn

    async def _open(self) -> _AioConnection:
        path = self.socket_path
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise connect_error(path, e) from e
        try:
            writer.write(_codec.encode_hello(self.client_name))
            frames = _codec.FrameReader()
            info = await asyncio.wait_for(self._read_hello(reader, frames, path), self.connect_timeout)
        except BaseException as e:
            writer.close()
            if isinstance(e, (OSError, asyncio.TimeoutError)):
                raise connect_error(path, e) from e
            raise
        conn = _AioConnection(reader, writer, info, frames)
        conn.task = asyncio.ensure_future(self._read_loop(conn))
        return conn

    @staticmethod
    async def _read_hello(reader: asyncio.StreamReader, frames: _codec.FrameReader, path: str) -> ServerInfo:
        while True:
            chunk = await reader.read(_READ_SIZE)
            if not chunk:
                raise ConnectionError(f"kpld at {path} closed the connection during the handshake")
            buf, spans = frames.feed(chunk)
            if spans:
                return handshake_reply(buf, spans, path)

    # -- the reader task ----------------------------------------------------

    async def _read_loop(self, conn: _AioConnection) -> None:
        error: Optional[BaseException] = None
        try:
            read = conn.reader.read
            feed = conn.frames.feed
            decode = _codec.decode_server_message
            pop = conn.pending.pop
            while True:
                chunk = await read(_READ_SIZE)
                if not chunk:
                    break
                buf, spans = feed(chunk)
                for start, end in spans:
                    kind, payload = decode(buf, start, end)
                    if kind == _codec.RESULTS:
                        ids, outcomes = payload
                        for rid, outcome in zip(ids, outcomes):
                            fut = pop(rid, None)
                            if outcome.__class__ is Result:
                                self._succeeded += 1
                                if fut is not None and not fut.done():
                                    fut.set_result(outcome)
                            else:
                                self._failed += 1
                                if fut is not None and not fut.done():
                                    fut.set_exception(outcome)
                    else:
                        self._control(conn, kind, payload)
        except asyncio.CancelledError:
            pass
        except (OSError, KpldError) as e:
            error = e
        except Exception as e:  # never leave futures hanging
            error = e
        finally:
            self._lost(conn, error)

    def _control(self, conn: _AioConnection, kind: int, payload: Any) -> None:
        if kind == _codec.FLUSHED or kind == _codec.STATS:
            wid, value = payload if kind == _codec.STATS else (payload, None)
            fut = conn.waiters.pop(wid, None)
            if fut is not None and not fut.done():
                fut.set_result(value)
        elif kind == _codec.ACCEPTED:
            conn.acceptance.runs.add(*payload)
            if conn.acceptance.sleepers:
                conn.acceptance.wake()
        elif kind == _codec.ERROR and payload["fatal"]:
            conn.fatal = payload

    def _lost(self, conn: _AioConnection, error: Optional[BaseException]) -> None:
        conn.alive = False
        code: Optional[str] = None
        if conn.closing:
            text = "the producer was closed before the daemon answered"
        elif conn.fatal is not None:
            code = conn.fatal["code"]
            text = f"kpld closed the connection: {code}: {conn.fatal['message']}"
        elif error is not None:
            text = f"connection to kpld lost: {error}"
        else:
            text = "kpld closed the connection"
        text += "; the record may or may not have been delivered"
        pending, conn.pending = conn.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(text, code))
        self._failed += len(pending)
        waiters, conn.waiters = conn.waiters, {}
        for w in waiters.values():
            if not w.done():
                w.set_exception(ConnectionError(text, code))
        conn.acceptance.wake()
        conn.writer.close()
        conn.finished.set()

    # -- putting --------------------------------------------------------------

    def put_record_nowait(
        self,
        stream: str,
        data: Data,
        partition_key: str,
        explicit_hash_key: Optional[Union[str, int]] = None,
        *,
        compression: Optional[Union[Compression, str]] = None,
    ) -> "RecordFuture":
        """Hand one record over without waiting; returns an asyncio future of
        its :class:`Result` (or raising RecordFailed / Busy / ConnectionError)."""
        return self._put_nowait(stream, [(partition_key, data, explicit_hash_key, compression)])[0]

    def put_records_nowait(self, stream: str, records: Iterable[RecordItem]) -> "List[RecordFuture]":
        """Hand a batch over without waiting; one asyncio future per record.
        ``records`` as for :meth:`kpld.Producer.put_records`."""
        return self._put_nowait(stream, records)

    async def put_record(
        self,
        stream: str,
        data: Data,
        partition_key: str,
        explicit_hash_key: Optional[Union[str, int]] = None,
        *,
        compression: Optional[Union[Compression, str]] = None,
    ) -> Result:
        """Put one record and wait for its final result.

        Returns the :class:`Result`; raises :class:`kpld.RecordFailed`
        (:class:`kpld.Busy`) or :class:`kpld.ConnectionError`. To put many
        records concurrently use :meth:`put_record_nowait` or
        :meth:`put_records` (awaiting each ``put_record`` in turn waits for
        the daemon's buffering time every time).
        """
        fut = self.put_record_nowait(stream, data, partition_key, explicit_hash_key, compression=compression)
        await self._drain()
        return await fut

    async def put_records(self, stream: str, records: Iterable[RecordItem]) -> "List[RecordFuture]":
        """Put a batch; returns one future per record once the batch is handed
        to the socket (waiting for room: backpressure), before the results.
        Await the futures (e.g. ``asyncio.gather``) for the results."""
        futures = self._put_nowait(stream, records)
        await self._drain()
        return futures

    def _put_nowait(self, stream: str, records: Iterable[Any]) -> "List[RecordFuture]":
        if self._closed:
            raise ConnectionError("the producer is closed")
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and conn.alive:
            first = self._next_id
            batch = _codec.encode_put_frames(first, stream, records, self.busy_if_full, conn.max_frame_size)
            self._next_id = first + batch.count
            futures = _futures(loop, first, batch.count)
            self._put += batch.count
            self._register_and_write(conn, batch, futures)
            return futures
        # Not connected: validate now (TypeError here, not later), queue, connect.
        records = list(records)
        probe = _codec.encode_put_frames(self._next_id, stream, records)
        first = self._next_id
        self._next_id = first + probe.count
        futures = _futures(loop, first, probe.count)
        self._put += probe.count
        self._backlog.append((stream, records, first, futures))
        self._start_connecting()
        return futures

    def _write_batch(
        self,
        conn: _AioConnection,
        stream: str,
        records: List[Any],
        first: int,
        futures: "List[RecordFuture]",
    ) -> None:
        batch = _codec.encode_put_frames(first, stream, records, self.busy_if_full, conn.max_frame_size)
        self._register_and_write(conn, batch, futures)

    def _register_and_write(self, conn: _AioConnection, batch: _codec.PutBatch, futures: "List[RecordFuture]") -> None:
        first = batch.first_id
        conn.pending.update(zip(range(first, first + batch.count), futures))
        acc = conn.acceptance
        for fut in futures:
            fut._acc = acc
        for index in batch.too_large:
            fut = conn.pending.pop(first + index)
            fut.set_exception(
                record_failure(
                    "RecordTooLarge",
                    f"the encoded record exceeds the daemon's frame limit of {conn.max_frame_size} bytes",
                    refused=True,
                )
            )
            self._failed += 1
        for f in batch.frames:
            conn.writer.write(f)

    async def _drain(self) -> None:
        connecting = self._connecting
        if connecting is not None:
            try:
                await asyncio.shield(connecting)
            except KpldError:
                return  # the queued records' futures carry the error
        conn = self._conn
        if conn is not None and conn.alive:
            try:
                await conn.writer.drain()
            except OSError:
                pass  # the reader task fails what is in flight

    # -- flush, stats, close --------------------------------------------------

    async def _request(self, encode: Any, timeout: Optional[float]) -> Any:
        conn = await self._connection()
        rid = self._next_id
        self._next_id += 1
        fut = asyncio.get_running_loop().create_future()
        conn.waiters[rid] = fut
        conn.writer.write(encode(rid))
        await self._drain()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            conn.waiters.pop(rid, None)

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every record put so far has its final result.

        Raises :class:`kpld.ConnectionError` when the connection is lost
        first, ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        if self._connecting is not None:
            try:
                await asyncio.shield(self._connecting)
            except KpldError:
                return  # every queued record failed with the connect error
        conn = self._conn
        if conn is None:
            return
        if not conn.alive:
            await conn.finished.wait()
            return
        if not conn.pending:
            return
        await self._request(_codec.encode_flush, timeout)

    async def daemon_stats(self, timeout: Optional[float] = 30.0) -> Dict[str, Any]:
        """The daemon's state as a dict (its StatsReply JSON)."""
        return json.loads(await self._request(_codec.encode_stats, timeout))  # type: ignore[no-any-return]

    def stats(self) -> ProducerStats:
        """This producer's record counters."""
        conn = self._conn
        in_flight = len(conn.pending) if conn is not None else 0
        in_flight += sum(len(b[3]) for b in self._backlog)
        return ProducerStats(self._put, self._succeeded, self._failed, in_flight)

    async def close(self, timeout: Optional[float] = None) -> None:
        """Flush (up to ``timeout`` seconds), then close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush(timeout)
        except (KpldError, asyncio.TimeoutError):
            pass
        conn = self._conn
        if conn is None:
            return
        conn.closing = True
        conn.writer.close()
        try:
            await conn.writer.wait_closed()
        except (OSError, ProtocolError):
            pass
        if conn.task is not None and not conn.task.done():
            conn.task.cancel()
        await conn.finished.wait()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> "AsyncProducer":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self.server_info else "not connected")
        return f"<kpld.aio.AsyncProducer {self.socket_path!r} {state}>"

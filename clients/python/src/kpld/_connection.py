"""One connection to the daemon: connect + handshake, the reader thread, and
the table of records in flight on it.

Ownership rule: a record's future is resolved by whoever removes it from
``Connection.pending`` (the reader thread on a result, the reader's final
sweep when the connection is lost, or a writer whose send failed), so no
future is resolved twice and none is forgotten.

Life of a connection:
  1. ``Connection.open`` connects, sends Hello and reads HelloReply in the
     caller's thread (raising ConnectionError / ProtocolError), then starts
     the reader thread.
  2. Writers (holding the producer's write lock) check ``alive``, register
     futures in ``pending`` and then send.
  3. When the socket ends (EOF, error, a fatal Error frame, a malformed
     frame, or ``close()``), the reader shuts the socket down (which wakes
     a writer blocked in ``sendall``), sets ``alive = False`` under the
     write lock (so nobody registers afterwards), fails every record still
     in ``pending`` and every waiting flush with ConnectionError, and sets
     ``finished``.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _codec
from ._acceptance import AcceptedRuns
from ._batch import RecordBatch, fail_owner
from ._future import resolve_many, wake_waiters
from .errors import ConnectionError, KpldError, ProtocolError
from .types import Result, ServerInfo

log = logging.getLogger("kpld")

_RECV_SIZE = 1 << 18


class Waiter:
    """A flush or stats request waiting for its reply."""

    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None

    def resolve(self, value: Any = None, error: Optional[BaseException] = None) -> None:
        self.value = value
        self.error = error
        self.event.set()


class Counters:
    """Totals over the producer's life, shared by its connections."""

    __slots__ = ("lock", "put", "succeeded", "failed")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.put = 0
        self.succeeded = 0
        self.failed = 0

    def add(self, succeeded: int, failed: int) -> None:
        with self.lock:
            self.succeeded += succeeded
            self.failed += failed


def connect_error(path: str, e: BaseException) -> ConnectionError:
    """The ConnectionError for a failed connect, saying what to check."""
    if isinstance(e, FileNotFoundError):
        why = "no such socket (is kpld running? set socket_path or $KPLD_SOCKET)"
    elif isinstance(e, ConnectionRefusedError):
        why = "connection refused (a stale socket file: kpld is not running)"
    elif isinstance(e, PermissionError):
        why = "permission denied (is this user allowed to use the socket?)"
    elif isinstance(e, socket.timeout) or type(e).__name__ == "TimeoutError":  # asyncio's too, on 3.9/3.10
        why = "timed out waiting for the daemon's handshake reply"
    else:
        why = str(e)
    return ConnectionError(f"cannot connect to kpld at {path}: {why}")


def handshake_reply(buf: bytes, spans: List[Tuple[int, int]], path: str) -> ServerInfo:
    """The ServerInfo of the daemon's first frame, or the error it means."""
    if len(spans) > 1:
        raise ProtocolError("the daemon sent frames before its handshake reply")
    kind, payload = _codec.decode_server_message(buf, *spans[0])
    if kind == _codec.HELLO:
        if payload.protocol_version != _codec.PROTOCOL_VERSION:
            raise ProtocolError(
                f"kpld at {path} speaks protocol version {payload.protocol_version}, "
                f"this client speaks {_codec.PROTOCOL_VERSION}"
            )
        return payload  # type: ignore[no-any-return]
    if kind == _codec.ERROR:
        code, message = payload["code"], payload["message"]
        if code == "ShuttingDown":
            raise ConnectionError(f"kpld at {path} refused the connection: {code}: {message}", code)
        raise ProtocolError(f"kpld at {path} refused the handshake: {code}: {message}", code)
    raise ProtocolError(f"expected a HelloReply from kpld at {path}, got message kind {kind}")


class Connection:
    """A connected, handshaken socket with its reader thread."""

    def __init__(
        self,
        sock: socket.socket,
        info: ServerInfo,
        reader: _codec.FrameReader,
        write_lock: threading.Lock,
        counters: Counters,
        path: str,
    ) -> None:
        self.sock = sock
        self.info = info
        self.path = path
        #: Max body of a frame we send: what the daemon accepts.
        self.max_frame_size = info.max_frame_size or _codec.DEFAULT_MAX_FRAME_SIZE
        #: record id -> its future, or its RecordBatch; see the ownership
        #: rule in the module doc.
        self.pending: Dict[int, Any] = {}
        #: Record ids the daemon's Accepted messages named (the Hello asks
        #: for them); read by the futures' and batches' accepted().
        self.accepted = AcceptedRuns(self.pending)
        #: Set (for good) by the first put_batch: the reader then scans
        #: Results frames and decodes only what futures need.
        self.has_batches = False
        #: flush / stats request id -> Waiter
        self.waiters: Dict[int, Waiter] = {}
        #: False once the connection is lost; read and written under write_lock.
        self.alive = True
        #: Set when the connection is lost and every in-flight record failed.
        self.finished = threading.Event()
        self._frames = reader
        self._write_lock = write_lock
        self._counters = counters
        self._closing = False
        self._fatal: Optional[Dict[str, Any]] = None
        self._thread = threading.Thread(target=self._run, name=f"kpld-reader[{path}]", daemon=True)
        self.reader_ident: Optional[int] = None

    # -- opening -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str,
        client_name: str,
        timeout: Optional[float],
        write_lock: threading.Lock,
        counters: Counters,
    ) -> "Connection":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
                sock.sendall(_codec.encode_hello(client_name))
                reader = _codec.FrameReader()
                info = cls._read_hello(sock, reader, path)
            except OSError as e:  # socket.timeout is an OSError
                raise connect_error(path, e) from e
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        conn = cls(sock, info, reader, write_lock, counters, path)
        conn._thread.start()
        return conn

    @staticmethod
    def _read_hello(sock: socket.socket, reader: _codec.FrameReader, path: str) -> ServerInfo:
        while True:
            chunk = sock.recv(_RECV_SIZE)
            if not chunk:
                raise ConnectionError(f"kpld at {path} closed the connection during the handshake")
            buf, spans = reader.feed(chunk)
            if spans:
                return handshake_reply(buf, spans, path)

    # -- the reader thread -------------------------------------------------

    def _run(self) -> None:
        self.reader_ident = threading.get_ident()
        error: Optional[BaseException] = None
        try:
            self._read_loop()
        except OSError as e:
            error = e
        except KpldError as e:
            error = e
        except BaseException as e:  # never leave futures hanging, whatever happened
            log.exception("kpld reader thread failed")
            error = e
        finally:
            self._lost(error)

    def _read_loop(self) -> None:
        recv = self.sock.recv
        feed = self._frames.feed
        decode = _codec.decode_server_message
        results_kind = _codec.RESULTS
        pending_pop = self.pending.pop
        counters = self._counters
        while True:
            chunk = recv(_RECV_SIZE)
            if not chunk:
                return
            buf, spans = feed(chunk)
            for start, end in spans:
                if self.has_batches and buf[start] == 0x12:  # ServerMessage.results
                    self._scanned_results(buf, start, end)
                    continue
                kind, payload = decode(buf, start, end)
                if kind == results_kind:
                    ids, outcomes = payload
                    futures = [pending_pop(rid, None) for rid in ids]
                    known = len(ids)
                    if None in futures:
                        for i, fut in enumerate(futures):
                            if fut is None:
                                known -= 1
                                log.debug("kpld: result for unknown record id %d ignored", ids[i])
                    failed = resolve_many(futures, outcomes, Result)
                    counters.add(known - failed, failed)
                else:
                    self._control(kind, payload)

    def _scanned_results(self, buf: bytes, start: int, end: int) -> None:
        """A Results frame while batches are in flight: their records keep
        the frame bytes and an offset; futures get their outcome decoded."""
        try:
            n, pos = _codec._varint_at(buf, start + 1, end)
            if pos + n != end:  # not a lone results field: the general decoder copes
                kind, payload = _codec.decode_server_message(buf, start, end)
                if kind == _codec.RESULTS:
                    self._route(payload[0], [], [], buf, outcomes=payload[1])
                else:  # members after the results: the last one wins, as in protobuf
                    self._control(kind, payload)
                return
            ids: List[int] = []
            starts: List[int] = []
            failed_at: List[int] = []
            _codec.scan_results(buf, pos, end, ids, starts, failed_at)
        except (IndexError, UnicodeDecodeError) as e:
            raise ProtocolError(f"malformed ServerMessage from the daemon: {e}") from e
        self._route(ids, starts, failed_at, buf)

    def _route(
        self,
        ids: List[int],
        starts: List[int],
        failed_at: List[int],
        buf: bytes,
        outcomes: Optional[List[Any]] = None,
    ) -> None:
        pending_pop = self.pending.pop
        owners = [pending_pop(rid, None) for rid in ids]
        failed_set = set(failed_at)
        futures: List[Any] = []
        future_outcomes: List[Any] = []
        cur: Optional[RecordBatch] = None
        done_here = failed_here = failed = 0
        known = len(ids)
        for j, owner in enumerate(owners):
            if owner is None:
                known -= 1
                log.debug("kpld: result for unknown record id %d ignored", ids[j])
                continue
            if owner.__class__ is RecordBatch:
                if owner is not cur:
                    if cur is not None:
                        cur._settled(done_here, failed_here)
                    cur = owner
                    done_here = failed_here = 0
                i = ids[j] - owner.first_id
                if outcomes is not None or j in failed_set:
                    if outcomes is not None:
                        o = outcomes[j]
                    else:
                        got: List[Any] = []
                        _codec.decode_result_at(buf, starts[j], got)
                        o = got[0]
                    owner._bufs[i] = o
                    if o.__class__ is not Result:
                        failed_here += 1
                        failed += 1
                else:
                    owner._offs[i] = starts[j]
                    owner._bufs[i] = buf
                done_here += 1
            else:
                futures.append(owner)
                if outcomes is not None:
                    future_outcomes.append(outcomes[j])
                else:
                    _codec.decode_result_at(buf, starts[j], future_outcomes)
        if cur is not None:
            cur._settled(done_here, failed_here)
        if futures:
            failed += resolve_many(futures, future_outcomes, Result)
        else:
            wake_waiters()
        self._counters.add(known - failed, failed)

    def _control(self, kind: int, payload: Any) -> None:
        if kind == _codec.FLUSHED or kind == _codec.STATS:
            if kind == _codec.STATS:
                wid, value = payload
            else:
                wid, value = payload, None
            waiter = self.waiters.pop(wid, None)
            if waiter is not None:
                waiter.resolve(value)
        elif kind == _codec.ACCEPTED:
            self.accepted.add(*payload)
            wake_waiters()
        elif kind == _codec.ERROR:
            if payload["fatal"]:
                self._fatal = payload
                # A clean daemon shutdown is news, not a problem: the records'
                # own results say whether anything was lost.
                level = logging.INFO if payload["code"] == "ShuttingDown" else logging.WARNING
                log.log(level, "kpld closes the connection: %s: %s", payload["code"], payload["message"])
            else:
                log.warning("kpld reports: %s: %s", payload["code"], payload["message"])
        elif kind == _codec.HELLO:
            log.warning("kpld sent an unexpected HelloReply; ignored")
        # kind 0: a message this client does not know; skipped

    def _lost(self, error: Optional[BaseException]) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a writer blocked in sendall
        except OSError:
            pass
        with self._write_lock:
            self.alive = False
        make_error = self._error_factory(error)
        failed = 0
        while self.pending:
            try:
                rid, owner = self.pending.popitem()
            except KeyError:  # emptied by a writer meanwhile
                break
            fail_owner(owner, rid, make_error)
            failed += 1
        if failed:
            self._counters.add(0, failed)
        while self.waiters:
            try:
                _, waiter = self.waiters.popitem()
            except KeyError:
                break
            waiter.resolve(error=make_error())
        self.sock.close()
        self.finished.set()

    def _error_factory(self, error: Optional[BaseException]) -> Callable[[], ConnectionError]:
        code: Optional[str] = None
        if self._closing:
            text = "the producer was closed before the daemon answered"
        elif self._fatal is not None:
            code = self._fatal["code"]
            text = f"kpld closed the connection: {code}: {self._fatal['message']}"
        elif isinstance(error, ProtocolError):
            text = f"connection to kpld dropped: {error}"
        elif error is not None:
            text = f"connection to kpld lost: {error}"
        else:
            text = "kpld closed the connection"
        text += "; the record may or may not have been delivered"

        def make() -> ConnectionError:
            e = ConnectionError(text, code)
            if error is not None:
                e.__cause__ = error
            return e

        return make

    # -- used by the producer ----------------------------------------------

    def fail_sent(self, ids: range, error: BaseException) -> None:
        """A writer's send failed: fail the records it registered (those the
        reader did not resolve yet) and drop the connection."""
        make = self._error_factory(error)
        failed = 0
        pop = self.pending.pop
        for rid in ids:
            owner = pop(rid, None)
            if owner is not None:
                fail_owner(owner, rid, make)
                failed += 1
        if failed:
            self._counters.add(0, failed)
        self.abort()

    def abort(self) -> None:
        """Drop the connection; the reader thread fails what is in flight."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, wait: bool = True) -> None:
        """Close the connection; records still in flight fail with ConnectionError."""
        self._closing = True
        self.abort()
        if wait and threading.get_ident() != self.reader_ident:
            self.finished.wait()

    def forget(self) -> None:
        """After fork(), in the child: release the inherited socket without
        disturbing the parent's connection (no shutdown)."""
        self.alive = False
        try:
            self.sock.close()
        except OSError:
            pass
        self.pending.clear()
        self.waiters.clear()

    @property
    def in_reader_thread(self) -> bool:
        return threading.get_ident() == self.reader_ident


def sendall(conn: Connection, frames: List[bytes]) -> None:
    """Send ``frames`` in order (the caller holds the write lock)."""
    sock = conn.sock
    if len(frames) == 1:
        sock.sendall(frames[0])
    else:
        for f in frames:
            sock.sendall(f)

"""How the producers react to what the real daemon cannot be made to send on
demand: fatal Error frames, malformed frames, a refused handshake, a peer
that vanishes with records in flight, message kinds from a newer daemon.

The peer is a scripted server on a real Unix socket speaking the protocol
through the reference codec (kpld._schema), not the fast paths under test.
Everything the daemon *can* do is tested against the daemon itself
(test_integration.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest

import kpld
from kpld import Producer, ProtocolError, RecordFailed, Result
from kpld import _codec, _schema
from kpld.aio import AsyncProducer

WAIT_S = 60  # generous bound for a scripted exchange; never asserted on

HELLO = {
    "hello": {"protocol_version": 1, "server_version": "peer 1", "max_frame_size": 1 << 20, "max_record_size": 1000}
}


class PeerConn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = _codec.FrameReader()
        self.frames: List[Dict[str, Any]] = []
        self.raw_sizes: List[int] = []

    def read(self) -> Dict[str, Any]:
        """The next ClientMessage as a dict; {} at EOF."""
        while not self.frames:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return {}
            buf, spans = self.reader.feed(chunk)
            for s, e in spans:
                self.raw_sizes.append(e - s)
                self.frames.append(_schema.decode("ClientMessage", buf, s, e))
        return self.frames.pop(0)

    def send(self, msg: Dict[str, Any]) -> None:
        self.sock.sendall(_codec.frame(_schema.encode("ServerMessage", msg)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def handshake(self, reply: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        hello = self.read()
        assert "hello" in hello
        self.send(reply or HELLO)
        return hello

    def read_put(self) -> List[Dict[str, Any]]:
        msg = self.read()
        assert "put" in msg, msg
        return msg["put"]["records"]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Peer:
    """Accepts connections on ``path``; runs ``script(conn, n)`` for the n-th,
    each connection in its own thread."""

    def __init__(self, path: str, script: Callable[[PeerConn, int], None]) -> None:
        self.path = path
        self.script = script
        self.errors: List[BaseException] = []
        self.conn_threads: List[threading.Thread] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        n = 0
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._run, args=(PeerConn(sock), n), daemon=True)
            self.conn_threads.append(t)
            t.start()
            n += 1

    def _run(self, conn: PeerConn, n: int) -> None:
        try:
            self.script(conn, n)
        except BaseException as e:  # noqa: BLE001 - reported by close()
            self.errors.append(e)
        finally:
            conn.close()

    def close(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self.listener.close()
        for t in [self.thread] + self.conn_threads:
            t.join(WAIT_S)
            assert not t.is_alive(), "the scripted peer is still running"
        assert not self.errors, self.errors


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / "peer.sock")


def ok_result(rid: int, **extra: Any) -> Dict[str, Any]:
    r = {
        "id": rid,
        "success": True,
        "shard_id": "shardId-000000000000",
        "sequence_number": "1",
        "attempts": [{"success": True, "delay_ms": 1, "duration_ms": 1}],
    }
    r.update(extra)
    return r


# -- connecting ------------------------------------------------------------


def test_no_daemon_raises_connection_error_naming_the_socket(tmp_path):
    path = str(tmp_path / "nobody.sock")
    with Producer(path) as p:
        with pytest.raises(kpld.ConnectionError, match="no such socket") as info:
            p.put_record("s", b"x", partition_key="k")
    assert path in str(info.value) and isinstance(info.value, kpld.KpldError)


def test_stale_socket_file_raises_connection_error(tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    with pytest.raises(kpld.ConnectionError, match="refused"):
        Producer(path).connect()


def test_refused_handshake_raises_protocol_error_with_the_code(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.read()
        conn.send({"error": {"code": "ProtocolVersion", "message": "speak 2", "fatal": True}})

    peer = Peer(sock_path, script)
    try:
        with pytest.raises(ProtocolError) as info:
            Producer(sock_path).connect()
        assert info.value.code == "ProtocolVersion"
    finally:
        peer.close()


def test_other_protocol_version_raises_protocol_error(sock_path):
    peer = Peer(sock_path, lambda conn, n: conn.handshake({"hello": {"protocol_version": 2}}))
    try:
        with pytest.raises(ProtocolError, match="version 2"):
            Producer(sock_path).connect()
    finally:
        peer.close()


def test_hello_names_the_client(sock_path):
    seen = []
    peer = Peer(sock_path, lambda conn, n: seen.append(conn.handshake()))
    try:
        Producer(sock_path, client_name="my-app").connect()
    finally:
        peer.close()
    assert seen == [{"hello": {"protocol_version": 1, "client_name": "my-app", "want_accepted": True}}]


# -- losing the connection ------------------------------------------------------


def test_fatal_error_fails_records_in_flight_with_its_code_and_next_put_reconnects(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        records = conn.read_put()
        if n == 0:
            conn.send({"results": {"results": [ok_result(records[0]["id"])]}})
            conn.send({"error": {"code": "ShuttingDown", "message": "bye", "fatal": True}})
        else:
            conn.send({"results": {"results": [ok_result(r["id"]) for r in records]}})
            conn.read()  # until the client closes

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            first, second = p.put_records("s", [("a", b"1"), ("b", b"2")])
            assert isinstance(first.result(WAIT_S), Result)
            with pytest.raises(kpld.ConnectionError, match="ShuttingDown: bye") as info:
                second.result(WAIT_S)
            assert info.value.code == "ShuttingDown"
            assert isinstance(p.put_record("s", b"3", partition_key="c").result(WAIT_S), Result)
            stats = p.stats()
    finally:
        peer.close()
    assert (stats.records_put, stats.records_succeeded, stats.records_failed) == (3, 2, 1)


def test_malformed_frame_drops_the_connection_with_a_protocol_error_cause(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        conn.read_put()
        conn.send_raw(_codec.frame(b"\x12\x05\x0a\x09\x08\x01\x00\x00"))  # RecordResult past its end
        conn.read()

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            fut = p.put_record("s", b"x", partition_key="k")
            with pytest.raises(kpld.ConnectionError) as info:
                fut.result(WAIT_S)
            assert isinstance(info.value.__cause__, ProtocolError)
    finally:
        peer.close()


def test_peer_vanishing_fails_records_and_a_waiting_flush(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        conn.read_put()
        assert "flush" in conn.read()
        # ... and goes away without answering

    peer = Peer(sock_path, script)
    try:
        p = Producer(sock_path)
        futures = p.put_records("s", [(str(i), b"x") for i in range(3)])
        with pytest.raises(kpld.ConnectionError):
            p.flush(timeout=WAIT_S)
        for f in futures:
            assert isinstance(f.exception(0), kpld.ConnectionError)
        p.close()
    finally:
        peer.close()


# -- the normal exchange, in detail -----------------------------------------------


def test_results_in_any_order_across_frames_and_unknown_message_kinds(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        ids = [r["id"] for r in conn.read_put()]
        conn.send_raw(_codec.frame(b"\x3a\x02\x08\x01"))  # ServerMessage field 7: from a newer daemon
        conn.send({"results": {"results": [ok_result(ids[2], sub_sequence_number=2)]}})
        conn.send({"error": {"code": "Something", "message": "non-fatal"}})
        conn.send(
            {
                "results": {
                    "results": [
                        {"id": ids[1], "error_code": "Busy", "error_message": "full"},
                        ok_result(ids[0]),
                        ok_result(123456789),  # unknown id: ignored
                    ]
                }
            }
        )
        while True:  # the client flushes only if some result is still missing
            msg = conn.read()
            if not msg:
                return
            conn.send({"flushed": msg["flush"]})

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            futures = p.put_records("s", [("a", b"1"), ("b", b"2"), ("c", b"3")])
            p.flush(timeout=WAIT_S)
            assert all(f.done() for f in futures)
            assert futures[0].result().sub_sequence_number == 0
            assert futures[2].result().sub_sequence_number == 2
            err = futures[1].exception()
            assert isinstance(err, kpld.Busy) and isinstance(err, RecordFailed) and err.code == "Busy"
    finally:
        peer.close()


def test_batches_are_cut_at_the_advertised_frame_size(sock_path):
    sizes: List[int] = []
    limit = 2000

    def script(conn: PeerConn, n: int) -> None:
        conn.handshake({"hello": {"protocol_version": 1, "max_frame_size": limit, "max_record_size": 1000}})
        got = 0
        while got < 100:
            got += len(conn.read_put())
        sizes.extend(conn.raw_sizes[1:])
        conn.read()

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            futures = p.put_records("s", [(f"k{i}", b"x" * 100) for i in range(100)])
            too_big = p.put_record("s", b"y" * 3000, partition_key="big")
            assert isinstance(too_big.exception(0), RecordFailed)
            assert too_big.exception(0).code == "RecordTooLarge"
            assert not any(f.done() for f in futures)
            p.close(timeout=0)  # the peer never answers: close anyway
    finally:
        peer.close()
    assert len(sizes) > 1 and max(sizes) <= limit
    for f in futures:
        assert isinstance(f.exception(0), kpld.ConnectionError)


def test_put_record_wire_format_with_every_option(sock_path):
    seen: List[Dict[str, Any]] = []

    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        msg = conn.read()
        seen.append(msg)
        conn.send({"results": {"results": [ok_result(r["id"]) for r in msg["put"]["records"]]}})
        conn.read()

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path, busy_if_full=True) as p:
            p.put_record("strm", "dätä", partition_key="pk", explicit_hash_key=42, compression="zlib").result(WAIT_S)
    finally:
        peer.close()
    assert seen == [
        {
            "put": {
                "records": [
                    {
                        "id": 1,
                        "stream": b"strm",
                        "partition_key": b"pk",
                        "explicit_hash_key": b"42",
                        "data": "dätä".encode(),
                        "compression": 3,
                    }
                ],
                "busy_if_full": True,
            }
        }
    ]


def test_wrongly_typed_records_raise_before_anything_is_sent(sock_path):
    peer = Peer(sock_path, lambda conn, n: (conn.handshake(), conn.read()))
    try:
        with Producer(sock_path) as p:
            with pytest.raises(TypeError):
                p.put_records("s", [("ok", b"x"), ("bad", 123)])
            with pytest.raises(TypeError):
                p.put_record("s", b"x", partition_key=5)  # type: ignore[arg-type]
            assert p.stats().records_put == 0
    finally:
        peer.close()


# -- asyncio ---------------------------------------------------------------------


def test_async_producer_exchange_and_fatal_error(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        records = conn.read_put()
        conn.send({"results": {"results": [ok_result(records[0]["id"])]}})
        conn.send({"error": {"code": "ShuttingDown", "message": "bye", "fatal": True}})

    peer = Peer(sock_path, script)

    async def main():
        async with AsyncProducer(sock_path) as p:
            a, b = p.put_records_nowait("s", [("a", b"1"), ("b", b"2")])
            r = await a
            with pytest.raises(kpld.ConnectionError) as info:
                await b
            return r, info.value

    try:
        r, err = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    finally:
        peer.close()
    assert isinstance(r, Result) and err.code == "ShuttingDown"


def test_async_producer_without_daemon_fails_queued_records(tmp_path):
    async def main():
        p = AsyncProducer(str(tmp_path / "nobody.sock"))
        futures = p.put_records_nowait("s", [("a", b"1"), ("b", b"2")])
        results = await asyncio.gather(*futures, return_exceptions=True)
        with pytest.raises(kpld.ConnectionError):
            await p.put_record("s", b"x", partition_key="k")
        await p.close()
        return results

    results = asyncio.run(asyncio.wait_for(main(), WAIT_S))
    assert all(isinstance(r, kpld.ConnectionError) for r in results)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() of a multi-threaded process
def test_a_forked_child_connects_anew_and_the_parent_keeps_its_connection(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        while True:
            msg = conn.read()
            if not msg:
                return
            ids = [r["id"] for r in msg["put"]["records"]]
            conn.send({"results": {"results": [ok_result(i, shard_id=f"conn-{n}") for i in ids]}})

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            assert p.put_record("s", b"parent", partition_key="k").result(WAIT_S).shard_id == "conn-0"
            pid = os.fork()
            if pid == 0:  # the child: report through the exit code only
                code = 1
                try:
                    r = p.put_record("s", b"child", partition_key="k").result(WAIT_S)
                    code = 0 if r.shard_id == "conn-1" else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            assert p.put_record("s", b"parent again", partition_key="k").result(WAIT_S).shard_id == "conn-0"
    finally:
        peer.close()


def test_a_clean_daemon_shutdown_logs_no_warning_but_other_fatal_errors_do(sock_path, caplog):
    import logging

    def script_for(code: str):
        def script(conn: PeerConn, n: int) -> None:
            conn.handshake()
            records = conn.read_put()
            conn.send({"results": {"results": [ok_result(r["id"]) for r in records]}})
            conn.send({"error": {"code": code, "message": "bye", "fatal": True}})
        return script

    for code, level in (("ShuttingDown", logging.INFO), ("FrameTooLarge", logging.WARNING)):
        caplog.clear()
        peer = Peer(sock_path, script_for(code))
        try:
            with caplog.at_level(logging.INFO, logger="kpld"):
                with Producer(sock_path) as p:
                    assert isinstance(p.put_record("s", b"1", partition_key="a").result(WAIT_S), Result)
                    deadline = time.monotonic() + WAIT_S
                    while not any(code in r.getMessage() for r in caplog.records):
                        assert time.monotonic() < deadline, caplog.records
                        time.sleep(0.01)
        finally:
            peer.close()
            if os.path.exists(sock_path):
                os.unlink(sock_path)
        (rec,) = [r for r in caplog.records if code in r.getMessage()]
        assert rec.levelno == level, (code, rec.levelname)


# -- the batch form ----------------------------------------------------------


def test_put_batch_results_in_any_order_with_failures_decoded_when_read(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        ids = [r["id"] for r in conn.read_put()]
        conn.send({"results": {"results": [ok_result(ids[3], sub_sequence_number=3), ok_result(ids[0])]}})
        conn.send(
            {
                "results": {
                    "results": [
                        {"id": ids[2], "error_code": "Busy", "error_message": "full"},
                        ok_result(ids[1], sub_sequence_number=1),
                        ok_result(123456789),  # unknown id: ignored
                    ]
                }
            }
        )
        conn.read()  # EOF at close

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            batch = p.put_batch("s", [("a", b"1"), ("b", b"2"), ("c", b"3"), ("d", b"4")])
            assert isinstance(batch, kpld.RecordBatch) and len(batch) == 4
            assert batch.wait(timeout=WAIT_S) is batch and batch.done()
            assert (batch.succeeded, batch.failed) == (3, 1)
            assert batch.result(3).sub_sequence_number == 3 and batch.result(-1) is batch.result(3)
            assert batch.result(0).shard_id == "shardId-000000000000"
            assert batch.exception(1) is None
            with pytest.raises(kpld.Busy) as info:
                batch.result(2)
            assert info.value.code == "Busy" and batch.failures() == [(2, info.value)]
            outcomes = batch.outcomes()
            assert [type(o) for o in outcomes] == [Result, Result, kpld.Busy, Result]
            assert p.stats().records_succeeded == 3 and p.stats().records_failed == 1
            with pytest.raises(IndexError):
                batch.result(4)
    finally:
        peer.close()


def test_put_batch_and_futures_share_a_connection(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        ids = [r["id"] for r in conn.read_put()] + [r["id"] for r in conn.read_put()]
        conn.send({"results": {"results": [ok_result(i, sub_sequence_number=k) for k, i in enumerate(ids)]}})
        conn.read()

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            futures = p.put_records("s", [("a", b"1"), ("b", b"2")])
            batch = p.put_batch("s", [("c", b"3"), ("d", b"4")])
            assert [f.result(timeout=WAIT_S).sub_sequence_number for f in futures] == [0, 1]
            batch.wait(timeout=WAIT_S)
            assert [batch.result(i).sub_sequence_number for i in range(2)] == [2, 3]
    finally:
        peer.close()


def test_put_batch_waits_time_out_and_a_lost_connection_fails_the_rest(sock_path):
    release = threading.Event()

    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        ids = [r["id"] for r in conn.read_put()]
        conn.send({"results": {"results": [ok_result(ids[0])]}})
        release.wait(WAIT_S)  # then vanish with two records unanswered

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            batch = p.put_batch("s", [("a", b"1"), ("b", b"2"), ("c", b"3")])
            assert batch.result(0, timeout=WAIT_S).shard_id == "shardId-000000000000"
            with cf_timeout():
                batch.wait(timeout=0.05)
            with cf_timeout():
                batch.result(1, timeout=0.05)
            release.set()
            batch.wait(timeout=WAIT_S)
            assert batch.failed == 2
            assert [i for i, _ in batch.failures()] == [1, 2]
            assert all(isinstance(e, kpld.ConnectionError) for _, e in batch.failures())
    finally:
        peer.close()


def test_put_batch_fails_records_too_large_for_a_frame_locally_and_sends_the_rest(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake({"hello": dict(HELLO["hello"], max_frame_size=300)})
        while True:  # the small frames may split the batch
            msg = conn.read()
            if not msg:
                return
            if "flush" in msg:
                conn.send({"flushed": msg["flush"]})
            else:
                conn.send({"results": {"results": [ok_result(r["id"]) for r in msg["put"]["records"]]}})

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            batch = p.put_batch("s", [("a", b"1"), ("big", b"x" * 400), ("c", b"3")]).wait(WAIT_S)
            assert (batch.succeeded, batch.failed) == (2, 1)
            assert batch.exception(1).code == "RecordTooLarge"
            empty = p.put_batch("s", [])
            assert empty.done() and len(empty) == 0 and empty.outcomes() == []
    finally:
        peer.close()


def cf_timeout():
    import concurrent.futures

    return pytest.raises(concurrent.futures.TimeoutError)


def test_put_batch_reads_results_frames_with_extra_members_and_unknown_fields(sock_path):
    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        ids = [r["id"] for r in conn.read_put()]
        first = _schema.encode("ServerMessage", {"results": {"results": [ok_result(ids[0])]}})
        conn.send_raw(_codec.frame(first + b"\xf8\x07\x01"))  # plus an unknown varint field 127
        second = _schema.encode("ServerMessage", {"results": {"results": [ok_result(ids[1], sub_sequence_number=1)]}})
        conn.send_raw(_codec.frame(second + second))  # the field twice: last wins, same record
        conn.read()

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            batch = p.put_batch("s", [("a", b"1"), ("b", b"2")]).wait(timeout=WAIT_S)
            assert batch.failed == 0 and batch.result(1).sub_sequence_number == 1
    finally:
        peer.close()


# -- acceptance -------------------------------------------------------------------


def test_accepted_from_runs_spanning_puts_out_of_order_results_and_a_peer_that_closes(sock_path):
    round2 = threading.Event()

    def script(conn: PeerConn, n: int) -> None:
        conn.handshake()
        a = [r["id"] for r in conn.read_put()]  # put_records: 3 records
        b = [r["id"] for r in conn.read_put()]  # put_batch: 2 records
        # a[1] is accepted by its success alone; a[2] refused; one Accepted names b and a[0],
        # in that order, the second run before the first.
        conn.send({"results": {"results": [ok_result(a[1])]}})
        refusal = {"id": a[2], "error_code": "InvalidPartitionKey", "error_message": "e", "refused": True}
        conn.send({"results": {"results": [refusal]}})
        conn.send({"accepted": {"first_ids": [b[0], a[0]], "counts": [2, 1]}})
        c = [r["id"] for r in conn.read_put()]  # round 2: 2 records, only the first accepted
        assert round2.wait(WAIT_S)
        conn.send({"accepted": {"first_ids": [c[0]], "counts": [1]}})
        # and the connection ends: c[1] was never accepted

    peer = Peer(sock_path, script)
    try:
        with Producer(sock_path) as p:
            futures = p.put_records("s", [("a", b"1"), ("b", b"2"), ("", b"3")])
            batch = p.put_batch("s", [("c", b"4"), ("d", b"5")])
            futures[0].accepted(timeout=WAIT_S)
            futures[1].accepted(timeout=WAIT_S)
            with pytest.raises(RecordFailed) as e:
                futures[2].accepted(timeout=WAIT_S)
            batch.accepted(timeout=WAIT_S)
            assert not futures[0].done() and not batch.done(), "accepted without results"
            more = p.put_records("s", [("e", b"6"), ("f", b"7")])
            round2.set()
            more[0].accepted(timeout=WAIT_S)
            with pytest.raises(kpld.ConnectionError):
                more[1].accepted(timeout=WAIT_S)
            futures[0].accepted(timeout=0)  # still accepted once the connection is gone
            batch.accepted(timeout=0)
            with pytest.raises(kpld.ConnectionError):
                futures[0].result(timeout=0)
    finally:
        peer.close()
    assert (e.value.code, e.value.refused) == ("InvalidPartitionKey", True)

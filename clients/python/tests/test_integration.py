"""The sync Producer against the real kpld daemon and a real local Kinesis
server (kinesalite). Skipped without $KPLD_BIN and $KPLD_TEST_KINESIS_ENDPOINT
(failed under CI=true); see kpld_harness.py."""

from __future__ import annotations

import gzip
import threading

import pytest

import kpld
from kpld import Busy, Producer, RecordFailed, Result
from kpld_harness import (
    RESULT_TIMEOUT_S,
    all_results,
    counted_on_shard,
    create_stream,
    poll,
    read_all,
    read_back,
    shard_ranges,
)

#: record_max_buffered_time_ms of the tests that need records to stay in
#: flight for a while: a generous margin for what follows the put (a kill,
#: a SIGTERM); their flushes send the records at once.
HOLD_MS = 10_000


def test_contract_example_with_the_socket_from_the_environment(daemon, stream, kinesis, monkeypatch):
    monkeypatch.setenv("KPLD_SOCKET", daemon.socket_path)
    with Producer(socket_path=None) as p:
        fut = p.put_record(stream, b"data", partition_key="k", explicit_hash_key=None)
        r = fut.result(timeout=RESULT_TIMEOUT_S)
        p.flush()
    assert isinstance(r, Result)
    assert r.shard_id in shard_ranges(kinesis, stream)
    assert r.sequence_number.isdigit()
    assert r.attempts and r.attempts[-1].success
    assert read_back(kinesis, stream, r.shard_id, r.sequence_number, r.sub_sequence_number) == ("k", b"data")


def test_put_records_accepts_every_input_shape_and_data_type(daemon, stream, kinesis):
    ehk = 2**127 + 12345
    records = [
        ("bytes", b"\x00\x01binary\xff"),
        ("bytearray", bytearray(b"ba")),
        ("memoryview", memoryview(b"mv")),
        ("str", "text ✓"),
        ["list", b"l"],
        {"partition_key": "dict", "data": b"d"},
        {"partition_key": "dict-ehk", "data": b"e", "explicit_hash_key": str(ehk)},
        ("tuple-ehk", b"t", ehk),
    ]
    expected_data = [b"\x00\x01binary\xff", b"ba", b"mv", "text ✓".encode(), b"l", b"d", b"e", b"t"]
    with Producer(daemon.socket_path) as p:
        futures = p.put_records(stream, records)
        results = all_results(futures)
    assert len(results) == len(records)
    ranges = shard_ranges(kinesis, stream)
    for r in results[6:]:
        lo, hi = ranges[r.shard_id]
        assert lo <= ehk <= hi
    for rec, data, r in zip(records, expected_data, results):
        pk = rec["partition_key"] if isinstance(rec, dict) else rec[0]
        assert read_back(kinesis, stream, r.shard_id, r.sequence_number, r.sub_sequence_number) == (pk, data)


def test_empty_partition_key_fails_with_invalid_partition_key(daemon, stream):
    with Producer(daemon.socket_path) as p:
        fut = p.put_record(stream, b"x", partition_key="")
        with pytest.raises(RecordFailed) as info:
            fut.result(timeout=RESULT_TIMEOUT_S)
    assert info.value.code == "InvalidPartitionKey"
    assert info.value.attempts == []
    assert not isinstance(info.value, Busy)


def test_unknown_stream_fails_with_the_kinesis_error_code(daemon):
    with Producer(daemon.socket_path) as p:
        fut = p.put_record("kpld-py-no-such-stream", b"x", partition_key="k")
        with pytest.raises(RecordFailed) as info:
            fut.result(timeout=RESULT_TIMEOUT_S)
    assert info.value.code == "ResourceNotFoundException"
    assert info.value.message


def test_one_bad_record_fails_alone_in_its_batch(daemon, stream):
    with Producer(daemon.socket_path) as p:
        futures = p.put_records(stream, [("a", b"1"), ("", b"2"), ("c", b"3"), ("x" * 257, b"4")])
        p.flush()
    assert isinstance(futures[0].result(), Result) and isinstance(futures[2].result(), Result)
    for f in (futures[1], futures[3]):
        assert isinstance(f.exception(), RecordFailed)
        assert f.exception().code == "InvalidPartitionKey"


def test_flush_returns_when_every_record_has_its_result(daemon, stream):
    with Producer(daemon.socket_path) as p:
        futures = [p.put_record(stream, b"r%d" % i, partition_key=str(i)) for i in range(300)]
        futures += p.put_records(stream, [(str(i), b"b") for i in range(2000)])
        p.flush()
        assert all(f.done() for f in futures)
        assert all(f.exception() is None for f in futures)
        stats = p.stats()
    assert (stats.records_put, stats.records_succeeded, stats.records_failed, stats.records_in_flight) == (
        2300,
        2300,
        0,
        0,
    )


def test_many_threads_put_at_once(daemon, own_stream, kinesis):
    stream = own_stream
    n_threads, per_thread = 8, 150
    futures_by_thread = [[] for _ in range(n_threads)]
    errors = []
    start = threading.Barrier(n_threads)

    with Producer(daemon.socket_path) as p:

        def work(t):
            try:
                start.wait()
                for i in range(per_thread):
                    put = (f"{t}-{i}", b"%d-%d" % (t, i))
                    futures_by_thread[t].append((put, p.put_record(stream, put[1], partition_key=put[0])))
                    if i % 50 == 0:
                        batch = [(f"{t}-{i}-{j}", b"batch %d-%d-%d" % (t, i, j)) for j in range(100)]
                        futures_by_thread[t].extend(zip(batch, p.put_records(stream, batch)))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        p.flush()
    assert errors == []
    puts = [put for fs in futures_by_thread for put, _ in fs]
    results = all_results([f for fs in futures_by_thread for _, f in fs])
    assert len(results) == n_threads * (per_thread + 300)
    # Each future's result must point at the record that future put: a
    # result handed to the wrong future names another record's position.
    stored = read_all(kinesis, stream)
    assert len(stored) == len(results)
    for put, r in zip(puts, results):
        assert stored[(r.shard_id, r.sequence_number, r.sub_sequence_number)] == put


def test_batches_are_split_under_the_daemons_frame_limit(make_daemon, stream, kinesis):
    d = make_daemon(max_record_size=1024, max_frame_size=4096, aggregation_max_size=1024)
    with Producer(d.socket_path) as p:
        assert p.connect().max_frame_size == 4096
        futures = p.put_records(stream, [(f"k{i}", bytes([i % 256]) * 100) for i in range(5000)])
        too_big_for_daemon = p.put_record(stream, b"x" * 2000, partition_key="big")
        too_big_for_frame = p.put_record(stream, b"y" * 5000, partition_key="bigger")
        after = p.put_record(stream, b"z", partition_key="after")
        results = all_results(futures)
        p.flush()
    assert len(results) == 5000
    r = results[3777]
    assert read_back(kinesis, stream, r.shard_id, r.sequence_number, r.sub_sequence_number) == (
        "k3777",
        bytes([3777 % 256]) * 100,
    )
    for fut in (too_big_for_daemon, too_big_for_frame):
        assert isinstance(fut.exception(), RecordFailed)
        assert fut.exception().code == "RecordTooLarge"
    assert isinstance(after.result(), Result)


def test_busy_if_full_fails_records_instead_of_waiting(make_daemon, stream):
    d = make_daemon(max_outstanding_records=10, record_max_buffered_time_ms=HOLD_MS)
    with Producer(d.socket_path, busy_if_full=True) as p:
        futures = p.put_records(stream, [(str(i), b"x") for i in range(30)])
        p.flush()
    busy = [f.exception() for f in futures if isinstance(f.exception(), Busy)]
    ok = [f.result() for f in futures if f.exception() is None]
    assert len(ok) == 10 and len(busy) == 20
    assert all(isinstance(e, RecordFailed) and e.code == "Busy" for e in busy)


def test_records_in_flight_fail_with_connection_error_and_the_next_put_reconnects(make_daemon, stream):
    d = make_daemon(record_max_buffered_time_ms=HOLD_MS)  # records stay buffered until flushed
    with Producer(d.socket_path) as p:
        in_flight = p.put_records(stream, [(str(i), b"lost?") for i in range(5)])
        d.kill()
        for f in in_flight:
            with pytest.raises(kpld.ConnectionError) as info:
                f.result(timeout=RESULT_TIMEOUT_S)
            assert isinstance(info.value, kpld.KpldError)
        with pytest.raises(kpld.ConnectionError, match="cannot connect"):
            p.put_record(stream, b"while down", partition_key="k")
        d.start()
        fut = p.put_record(stream, b"after restart", partition_key="k")
        p.flush()
        assert isinstance(fut.result(timeout=0), Result)
        stats = p.stats()
    assert (stats.records_put, stats.records_succeeded, stats.records_failed) == (6, 1, 5)


def test_sigterm_drains_buffered_records_before_closing(make_daemon, stream, kinesis):
    # The records would wait an hour for their buffer time, far past the
    # bound on the exit (STOP_TIMEOUT_S): only a daemon that flushes on
    # SIGTERM sends them before it exits, and one that ignores SIGTERM fails
    # the bound.
    d = make_daemon(record_max_buffered_time_ms=3_600_000)
    with Producer(d.socket_path) as p:
        records = [(f"drain-{i}", f"drained-{i}".encode()) for i in range(20)]
        futures = p.put_records(stream, records)
        # A round trip after the put: the daemon reads a connection's frames
        # in order, so once it answers, it has accepted the records (records
        # still unread at SIGTERM would rightly fail with ShuttingDown).
        p.daemon_stats()
        assert p.stats().records_in_flight == 20
        assert d.stop() == 0
        results = all_results(futures)
        with pytest.raises(kpld.ConnectionError):
            p.put_record(stream, b"x", partition_key="k")
    for (pk, data), r in zip(records, results):
        assert isinstance(r, Result), r
        assert read_back(kinesis, stream, r.shard_id, r.sequence_number, r.sub_sequence_number) == (pk, data)


def test_compression_is_applied_per_record(daemon, stream, kinesis):
    payload = b"compress me " * 50
    with Producer(daemon.socket_path) as p:
        gz = p.put_record(stream, payload, partition_key="gz", compression="gzip").result(timeout=RESULT_TIMEOUT_S)
        plain = p.put_record(stream, payload, partition_key="plain", compression=kpld.Compression.NONE).result(
            timeout=RESULT_TIMEOUT_S
        )
    _, stored = read_back(kinesis, stream, gz.shard_id, gz.sequence_number, gz.sub_sequence_number)
    assert gzip.decompress(stored) == payload
    assert read_back(kinesis, stream, plain.shard_id, plain.sequence_number, plain.sub_sequence_number)[1] == payload


def test_close_is_idempotent_and_puts_after_close_raise(daemon, stream):
    p = Producer(daemon.socket_path)
    fut = p.put_record(stream, b"x", partition_key="k")
    p.close()
    assert fut.done() and isinstance(fut.result(), Result)
    p.close()
    assert p.closed
    with pytest.raises(kpld.ConnectionError, match="closed"):
        p.put_record(stream, b"x", partition_key="k")


def test_daemon_stats_and_server_info(daemon, stream):
    with Producer(daemon.socket_path) as p:
        assert p.server_info is None
        info = p.connect()
        assert info.protocol_version == 1 and info.server_version.startswith("kpld")
        assert info.max_frame_size > info.max_record_size > 0
        r = p.put_record(stream, b"counted", partition_key="stats").result(timeout=RESULT_TIMEOUT_S)
        # The snapshot counts the record on the shard its result named (stats are
        # gathered about once a second, so the count may show up a little after the result).
        poll(
            f"stats to count the record on {r.shard_id}",
            lambda: counted_on_shard(p.daemon_stats(), stream, r.shard_id) >= 1,
        )


def test_a_stream_with_many_shards_gets_records_on_every_shard(make_daemon, kinesis):
    name = create_stream(kinesis, 16)
    try:
        d = make_daemon()
        with Producer(d.socket_path) as p:
            results = all_results(p.put_records(name, [(f"key-{i}", b"v") for i in range(2000)]))
        assert {r.shard_id for r in results} == set(shard_ranges(kinesis, name))
    finally:
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def test_put_batch_delivers_every_record_and_its_results_read_back(daemon, stream, kinesis):
    records = [(f"key-{i % 37}", f"batch record {i}".encode()) for i in range(3000)]
    with Producer(daemon.socket_path) as p:
        futures = p.put_records(stream, records[:10])  # futures and batches on one connection
        batch = p.put_batch(stream, records).wait(timeout=RESULT_TIMEOUT_S)
        bad = p.put_batch(stream, [("", b"no key")]).wait(timeout=RESULT_TIMEOUT_S)
        assert all_results(futures)
    assert (batch.succeeded, batch.failed) == (3000, 0) and batch.failures() == []
    assert bad.failed == 1 and bad.exception(0).code == "InvalidPartitionKey"
    ranges = shard_ranges(kinesis, stream)
    for i in (0, 1, 1499, 2999):
        r = batch.result(i)
        assert r.shard_id in ranges
        assert read_back(kinesis, stream, r.shard_id, r.sequence_number, r.sub_sequence_number) == records[i]


# -- acceptance (docs/protocol.md, "Acceptance") ----------------------------------

#: Buffering so long that no record of these tests gets a result before the
#: test flushes: accepted() must return without one.
FOREVER_MS = 3_600_000


def test_accepted_returns_before_the_result_and_result_still_works(make_daemon, stream, kinesis):
    d = make_daemon(record_max_buffered_time_ms=FOREVER_MS)
    with Producer(d.socket_path) as p:
        futures = p.put_records(stream, [(f"k{i}", f"acc {i}".encode()) for i in range(50)])
        single = p.put_record(stream, b"single", partition_key="one")
        for f in futures + [single]:
            f.accepted(timeout=RESULT_TIMEOUT_S)
        assert not any(f.done() for f in futures + [single]), "accepted while still buffered (no result yet)"
        p.flush()
        results = all_results(futures + [single])
    for f in futures:
        f.accepted(timeout=0)  # still true once the result came
    r = results[-1]
    assert read_back(kinesis, stream, r.shard_id, r.sequence_number, r.sub_sequence_number) == ("one", b"single")


def test_accepted_raises_the_refusal_of_an_invalid_record_naming_its_error(daemon, stream):
    with Producer(daemon.socket_path) as p:
        good = p.put_record(stream, b"fine", partition_key="k")
        empty_key = p.put_record(stream, b"x", partition_key="")
        bad_stream = p.put_record("not a stream!", b"x", partition_key="k")
        good.accepted(timeout=RESULT_TIMEOUT_S)
        with pytest.raises(RecordFailed) as e1:
            empty_key.accepted(timeout=RESULT_TIMEOUT_S)
        with pytest.raises(RecordFailed) as e2:
            bad_stream.accepted(timeout=RESULT_TIMEOUT_S)
        p.flush()
    assert (e1.value.code, e1.value.refused) == ("InvalidPartitionKey", True)
    assert e2.value.refused and e2.value.code.startswith("Invalid"), e2.value.code
    assert empty_key.exception() is e1.value, "accepted() raises the record's own failure"
    assert isinstance(good.result(timeout=RESULT_TIMEOUT_S), Result)


def test_put_batch_accepted_waits_for_all_and_raises_the_first_refused(daemon, stream):
    with Producer(daemon.socket_path) as p:
        ok = p.put_batch(stream, [(str(i), b"b") for i in range(300)])
        ok.accepted(timeout=RESULT_TIMEOUT_S)
        mixed = p.put_batch(stream, [("a", b"1"), ("", b"2"), ("c", b"3"), ("", b"4")])
        with pytest.raises(RecordFailed) as e:
            mixed.accepted(timeout=RESULT_TIMEOUT_S)
        mixed.accepted(0, timeout=RESULT_TIMEOUT_S)
        mixed.accepted(2, timeout=RESULT_TIMEOUT_S)
        with pytest.raises(RecordFailed):
            mixed.accepted(3, timeout=RESULT_TIMEOUT_S)
        ok.wait(RESULT_TIMEOUT_S)
        mixed.wait(RESULT_TIMEOUT_S)
    assert (e.value.code, e.value.refused) == ("InvalidPartitionKey", True)
    assert mixed.exception(1) is e.value, "the first record not accepted is index 1"
    assert ok.failed == 0 and mixed.failed == 2


def test_accepted_raises_connection_error_when_the_daemon_dies_before_accepting(make_daemon, stream):
    # Room for 10 records, held an hour: the daemon takes the first 10 of the
    # frame and waits for room for the rest, so it sends no Accepted for the
    # frame; SIGKILL then ends the connection with none of them accepted.
    d = make_daemon(max_outstanding_records=10, record_max_buffered_time_ms=FOREVER_MS)
    with Producer(d.socket_path) as p:
        first = p.put_record(stream, b"alone", partition_key="k")
        first.accepted(timeout=RESULT_TIMEOUT_S)
        waiting = p.put_records(stream, [(str(i), b"w") for i in range(30)])
        d.kill()
        for f in waiting:
            with pytest.raises(kpld.ConnectionError):
                f.accepted(timeout=RESULT_TIMEOUT_S)
            with pytest.raises(kpld.ConnectionError):
                f.result(timeout=0)
        # accepted before the kill: still accepted (its result is lost, but
        # for a disk stream the daemon would replay it: resending duplicates)
        first.accepted(timeout=0)
        with pytest.raises(kpld.ConnectionError):
            first.result(timeout=0)


def test_records_of_a_disk_stream_accepted_before_sigkill_are_sent_by_the_next_daemon(
    make_daemon, kinesis, own_stream, tmp_path
):
    # An hour of buffering: nothing is sent before the kill, so only the
    # spool can deliver these records.
    spool = str(tmp_path / "spool")
    d = make_daemon(durability="disk", spool_dir=spool, record_max_buffered_time_ms=FOREVER_MS)
    sent = {f"{i}|disk".encode() for i in range(200)}
    with Producer(d.socket_path) as p:
        futures = p.put_records(own_stream, [(f"k{i}", f"{i}|disk".encode()) for i in range(200)])
        for f in futures:
            f.accepted(timeout=RESULT_TIMEOUT_S)
        d.kill()
        for f in futures:
            with pytest.raises(kpld.ConnectionError):
                f.result(timeout=RESULT_TIMEOUT_S)
    assert not read_all(kinesis, own_stream), "nothing was sent before the kill"
    make_daemon(durability="disk", spool_dir=spool)

    def landed():
        got = {data for _, data in read_all(kinesis, own_stream).values()}
        return got if sent <= got else None

    got = poll("the spooled records in the stream", landed)
    assert got == sent

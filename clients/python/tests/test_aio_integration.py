"""kpld.aio.AsyncProducer against the real daemon and kinesalite (skipped
without $KPLD_BIN and $KPLD_TEST_KINESIS_ENDPOINT; failed under CI=true).
Each test runs its own event loop with asyncio.run: no plugin needed."""

from __future__ import annotations

import asyncio

import pytest

import kpld
from kpld import RecordFailed, Result
from kpld.aio import AsyncProducer
from kpld_harness import RESULT_TIMEOUT_S, counted_on_shard, read_all, read_back

HOLD_MS = 10_000


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, RESULT_TIMEOUT_S))


def test_await_put_record_returns_the_result(daemon, stream, kinesis):
    async def main():
        async with AsyncProducer(daemon.socket_path) as p:
            return await p.put_record(stream, b"async data", partition_key="ak")

    r = run(main())
    assert isinstance(r, Result)
    assert read_back(kinesis, stream, r.shard_id, r.sequence_number, r.sub_sequence_number) == ("ak", b"async data")


def test_nowait_futures_batches_and_flush(daemon, stream):
    async def main():
        async with AsyncProducer(daemon.socket_path) as p:
            singles = [p.put_record_nowait(stream, b"s", partition_key=str(i)) for i in range(200)]
            batch = await p.put_records(stream, [(str(i), b"b") for i in range(1000)])
            more = p.put_records_nowait(stream, [{"partition_key": "d", "data": "text"}])
            await p.flush()
            assert all(f.done() for f in singles + batch + more)
            assert all(isinstance(f, asyncio.Future) for f in singles + batch + more)
            stats = p.stats()
            return [f.result() for f in singles + batch + more], stats

    results, stats = run(main())
    assert len(results) == 1201 and all(isinstance(r, Result) for r in results)
    assert (stats.records_put, stats.records_succeeded, stats.records_failed, stats.records_in_flight) == (
        1201,
        1201,
        0,
        0,
    )


def test_failures_raise_record_failed(daemon, stream):
    async def main():
        async with AsyncProducer(daemon.socket_path) as p:
            with pytest.raises(RecordFailed) as empty:
                await p.put_record(stream, b"x", partition_key="")
            with pytest.raises(RecordFailed) as unknown:
                await p.put_record("kpld-py-no-such-stream", b"x", partition_key="k")
            return empty.value, unknown.value

    empty, unknown = run(main())
    assert empty.code == "InvalidPartitionKey" and empty.attempts == []
    assert unknown.code == "ResourceNotFoundException"


def test_many_tasks_put_concurrently(daemon, own_stream, kinesis):
    stream = own_stream
    async def worker(p, w):
        out = []
        for i in range(5):  # each await waits for the daemon's buffering time
            put = (f"{w}-{i}", b"task %d put %d" % (w, i))
            out.append((put, await p.put_record(stream, put[1], partition_key=put[0])))
        return out

    async def main():
        async with AsyncProducer(daemon.socket_path) as p:
            return await asyncio.gather(*(worker(p, w) for w in range(100)))

    done = [x for rs in run(main()) for x in rs]
    assert len(done) == 500
    # Each awaited result must point at the record that task put.
    stored = read_all(kinesis, stream)
    assert len(stored) == 500
    for put, r in done:
        assert stored[(r.shard_id, r.sequence_number, r.sub_sequence_number)] == put


def test_in_flight_fail_with_connection_error_and_the_next_put_reconnects(make_daemon, stream):
    d = make_daemon(record_max_buffered_time_ms=HOLD_MS)

    async def main():
        async with AsyncProducer(d.socket_path) as p:
            in_flight = await p.put_records(stream, [(str(i), b"x") for i in range(5)])
            d.kill()
            errors = await asyncio.gather(*in_flight, return_exceptions=True)
            assert all(isinstance(e, kpld.ConnectionError) for e in errors), errors
            down = p.put_record_nowait(stream, b"down", partition_key="k")
            with pytest.raises(kpld.ConnectionError, match="cannot connect"):
                await down
            d.start()
            fut = p.put_record_nowait(stream, b"after restart", partition_key="k")
            await p.flush()
            return fut.result(), p.stats()

    r, stats = run(main())
    assert isinstance(r, Result)
    assert (stats.records_put, stats.records_succeeded, stats.records_failed) == (7, 1, 6)


def test_close_is_idempotent_and_puts_after_close_raise(daemon, stream):
    async def main():
        p = AsyncProducer(daemon.socket_path)
        fut = p.put_record_nowait(stream, b"x", partition_key="k")
        await p.close()
        assert fut.done() and isinstance(fut.result(), Result)
        await p.close()
        with pytest.raises(kpld.ConnectionError, match="closed"):
            p.put_record_nowait(stream, b"x", partition_key="k")
        return p.closed

    assert run(main())


def test_daemon_stats_and_connect(daemon, stream):
    async def main():
        async with AsyncProducer(daemon.socket_path) as p:
            info = await p.connect()
            r = await p.put_record(stream, b"counted", partition_key="aio-stats")
            # The snapshot counts the record on the shard its result named (stats are
            # gathered about once a second, so the count may show up a little after the result).
            deadline = asyncio.get_running_loop().time() + RESULT_TIMEOUT_S
            while True:
                stats = await p.daemon_stats()
                if counted_on_shard(stats, stream, r.shard_id) >= 1:
                    return info
                assert asyncio.get_running_loop().time() < deadline, stats
                await asyncio.sleep(0.1)

    info = run(main())
    assert info.protocol_version == 1


def test_await_accepted_returns_for_taken_records_and_raises_for_refused(make_daemon, stream):
    d = make_daemon(record_max_buffered_time_ms=3_600_000)

    async def main():
        async with AsyncProducer(d.socket_path) as p:
            futures = await p.put_records(stream, [(str(i), b"a") for i in range(100)])
            refused = p.put_record_nowait(stream, b"x", partition_key="")
            for f in futures:
                await f.accepted(timeout=RESULT_TIMEOUT_S)
            assert not any(f.done() for f in futures), "accepted while buffered, before any result"
            with pytest.raises(RecordFailed) as e:
                await refused.accepted(timeout=RESULT_TIMEOUT_S)
            with pytest.raises(asyncio.TimeoutError):
                await p.put_record_nowait(stream, b"late", partition_key="k").accepted(timeout=0)
            await p.flush()
            return [f.result() for f in futures], e.value

    results, err = run(main())
    assert all(isinstance(r, Result) for r in results)
    assert (err.code, err.refused) == ("InvalidPartitionKey", True)


def test_await_accepted_raises_connection_error_after_sigkill(make_daemon, stream):
    d = make_daemon(max_outstanding_records=10, record_max_buffered_time_ms=3_600_000)

    async def main():
        async with AsyncProducer(d.socket_path) as p:
            waiting = await p.put_records(stream, [(str(i), b"w") for i in range(30)])
            d.kill()
            errors = []
            for f in waiting:
                with pytest.raises(kpld.ConnectionError) as e:
                    await f.accepted(timeout=RESULT_TIMEOUT_S)
                errors.append(e.value)
            return errors

    assert len(run(main())) == 30

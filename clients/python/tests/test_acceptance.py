"""kpld._acceptance: the accepted id runs of a connection and what accepted()
decides from them and from a record's outcome (no daemon: pure logic, plus a
future resolved from another thread)."""

from __future__ import annotations

import random
import threading
from concurrent.futures import TimeoutError as FuturesTimeoutError

import pytest

from kpld import ConnectionError, RecordBatch, RecordFailed, Result
from kpld._acceptance import ACCEPTED, AcceptedRuns, verdict
from kpld._future import RecordFuture, wake_waiters


def test_runs_that_touch_merge_and_gaps_stay_missing():
    r = AcceptedRuns()
    r.add([1, 4], [2, 2])  # 1,2 and 4,5
    assert [i for i in range(0, 8) if i in r] == [1, 2, 4, 5]
    r.add([3], [1])  # fills the gap: one interval
    assert len(r) == 1
    assert r.missing(0, 8) == [0, 6, 7]
    r.add([10, 7], [1, 1])  # out of order
    assert r.missing(1, 11) == [6, 8, 9, 11]


def test_runs_match_a_set_of_ids_whatever_the_order_they_come_in():
    rng = random.Random(7)
    for _ in range(200):
        ids = set()
        r = AcceptedRuns()
        for _ in range(rng.randrange(1, 12)):
            first, count = rng.randrange(0, 60), rng.randrange(0, 6)
            r.add([first], [count])
            ids.update(range(first, first + count))
        assert [i for i in range(70) if i in r] == sorted(ids)
        assert r.missing(0, 70) == sorted(set(range(70)) - ids)


def test_ids_above_2_to_the_53_are_exact():
    r = AcceptedRuns()
    big = (1 << 53) + 1
    r.add([big], [2])
    assert big in r and big + 1 in r and big - 1 not in r and big + 2 not in r


def test_pruning_keeps_the_runs_of_records_still_pending():
    pending = {300: object()}
    r = AcceptedRuns(pending)
    # every other record accepted: a run per record, well past the prune limit
    for rid in range(0, 400, 2):
        r.add([rid], [1])
    assert all(rid in r for rid in range(300, 400, 2)), "runs of pending records and later ones stay"
    assert len(r) < 100, "runs below the lowest pending id are dropped"


def test_verdict_of_outcomes_without_an_accepted():
    ok = Result("shardId-0", "1", 0, [])
    refused = RecordFailed("InvalidPartitionKey", "empty", [], refused=True)
    taken = RecordFailed("Expired", "too old", [])
    lost = ConnectionError("kpld closed the connection")
    assert verdict(ok) is ACCEPTED
    assert verdict(taken) is ACCEPTED
    assert verdict(refused) is refused
    assert verdict(lost) is lost


def test_future_accepted_returns_once_another_thread_records_its_run():
    runs = AcceptedRuns()
    fut = RecordFuture(runs, 7)
    with pytest.raises(FuturesTimeoutError):
        fut.accepted(timeout=0)
    waiting = threading.Thread(target=fut.accepted)
    waiting.start()
    runs.add([5], [3])
    wake_waiters()
    waiting.join()
    assert not fut.done(), "accepted, still without a result"
    fut.set_exception(ConnectionError("lost"))
    fut.accepted()  # an Accepted named it: the lost connection does not change that


def test_future_accepted_raises_the_refusal_with_its_code():
    fut = RecordFuture(AcceptedRuns(), 1)
    fut.set_exception(RecordFailed("InvalidStreamName", "not a stream!", [], refused=True))
    with pytest.raises(RecordFailed) as e:
        fut.accepted()
    assert (e.value.code, e.value.refused) == ("InvalidStreamName", True)


def test_future_lost_before_any_accepted_raises_connection_error():
    fut = RecordFuture(AcceptedRuns(), 1)
    fut.set_exception(ConnectionError("kpld closed the connection"))
    with pytest.raises(ConnectionError):
        fut.accepted(timeout=5)


def test_batch_accepted_raises_the_first_record_not_accepted_once_all_are_settled():
    runs = AcceptedRuns()
    rb = RecordBatch(10, 4, runs)
    runs.add([10], [1])
    runs.add([13], [1])
    rb._fail(11, RecordFailed("Busy", "full", [], refused=True))
    with pytest.raises(FuturesTimeoutError):
        rb.accepted(timeout=0)  # record 12 not settled yet
    rb.accepted(0)
    rb.accepted(3)
    with pytest.raises(RecordFailed, match="Busy"):
        rb.accepted(1)
    rb._fail(12, ConnectionError("lost"))
    with pytest.raises(RecordFailed, match="Busy"):
        rb.accepted()
    with pytest.raises(ConnectionError):
        rb.accepted(2)
    with pytest.raises(IndexError):
        rb.accepted(4)

"""RecordFuture behaves as a concurrent.futures.Future in every way callers use."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

from kpld._future import RecordFuture, _LazyFuture


def test_record_future_is_the_lazy_future_on_this_python():
    # If this fails, the running Python changed Future's internals and the
    # plain fallback is in use: correct, but slower. Check _future.py.
    assert RecordFuture is _LazyFuture


def test_is_a_concurrent_future_that_starts_running_and_cannot_be_cancelled():
    f = RecordFuture()
    assert isinstance(f, cf.Future)
    assert f.running() and not f.done()
    assert f.cancel() is False
    assert not f.cancelled()


def test_result_set_before_anyone_looks():
    f = RecordFuture()
    f.set_result(5)
    assert f.done() and f.result(timeout=0) == 5 and f.exception() is None
    with pytest.raises(cf.InvalidStateError):
        f.set_result(6)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())


def test_exception_set_before_anyone_looks():
    f = RecordFuture()
    err = KeyError("x")
    f.set_exception(err)
    assert f.exception() is err
    with pytest.raises(KeyError):
        f.result()


def test_result_times_out_while_pending():
    f = RecordFuture()
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0)


def test_waiting_thread_is_woken_by_result():
    f = RecordFuture()
    started = threading.Event()
    got = []

    def wait():
        started.set()
        got.append(f.result())

    t = threading.Thread(target=wait)
    t.start()
    started.wait()
    f.set_result("r")
    t.join()
    assert got == ["r"]


def test_done_callbacks_run_on_resolution_and_after():
    f = RecordFuture()
    seen = []
    f.add_done_callback(lambda fut: seen.append(("early", fut.result())))
    f.set_result(1)
    f.add_done_callback(lambda fut: seen.append(("late", fut.result())))
    assert seen == [("early", 1), ("late", 1)]


def test_wait_and_as_completed_work_with_pending_and_done_futures():
    done_already = RecordFuture()
    done_already.set_result(0)
    pending = [RecordFuture() for _ in range(5)]
    result = {}

    def resolve():
        for i, f in enumerate(pending):
            f.set_result(i + 1)

    waited = threading.Thread(target=lambda: result.update(w=cf.wait([done_already] + pending)))
    waited.start()
    resolve()
    waited.join()
    assert len(result["w"].done) == 6
    assert sorted(f.result() for f in cf.as_completed([done_already] + pending)) == [0, 1, 2, 3, 4, 5]


def _race_once() -> None:
    futures = [RecordFuture() for _ in range(50)]
    barrier = threading.Barrier(3)
    out = []

    def waiter(fs):
        barrier.wait()
        out.extend(f.result(timeout=60) for f in fs)

    def resolver():
        barrier.wait()
        for i, f in enumerate(futures):
            f.set_result(i)

    threads = [
        threading.Thread(target=waiter, args=(futures[::2],)),
        threading.Thread(target=waiter, args=(futures[1::2],)),
        threading.Thread(target=resolver),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(50))


def test_many_threads_racing_waiters_and_resolvers():
    # Waiters and resolvers start together so that the lazy creation of the
    # condition races the lock-free resolution; every waiter must finish.
    for _ in range(50):
        _race_once()


def test_repr_works_in_both_states():
    f = RecordFuture()
    assert "running" in repr(f)
    f.set_result(Ellipsis)
    assert "finished" in repr(f)


def test_resolve_many_resolves_watched_and_unwatched_futures_and_counts_failures():
    from kpld._future import resolve_many

    plain, watched, skipped, failing = RecordFuture(), RecordFuture(), None, RecordFuture()
    seen = []
    watched.add_done_callback(lambda fut: seen.append(fut.result()))
    err = ValueError("no")
    failed = resolve_many([plain, watched, skipped, failing], [1, 2, 3, err], int)
    assert failed == 1
    assert plain.result(timeout=0) == 1 and watched.result(timeout=0) == 2 and seen == [2]
    assert failing.exception(timeout=0) is err
    with pytest.raises(cf.InvalidStateError):
        plain.set_result(9)


def test_threads_waiting_on_many_futures_are_woken_by_one_resolve_many():
    from kpld._future import resolve_many

    futures = [RecordFuture() for _ in range(20)]
    started = threading.Barrier(5)
    got = []

    def wait(fs):
        started.wait()
        got.extend(f.result(timeout=60) for f in fs)

    threads = [threading.Thread(target=wait, args=(futures[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    resolve_many(futures, list(range(20)), int)
    for t in threads:
        t.join()
    assert sorted(got) == list(range(20))


def test_exception_times_out_while_pending_and_repr_names_the_outcome():
    f = RecordFuture()
    with pytest.raises(cf.TimeoutError):
        f.exception(timeout=0.01)
    f.set_exception(KeyError("k"))
    assert "raised KeyError" in repr(f)

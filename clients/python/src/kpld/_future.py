"""RecordFuture: a ``concurrent.futures.Future`` that costs two objects, not eleven.

A plain Future builds a ``threading.Condition`` (an RLock, a deque, five
bound methods) and two lists in ``__init__``. At 100,000 records/s with tens
of thousands outstanding, those objects, not the encoding, dominate: the
cyclic garbage collector spends most of the process' time walking them.

RecordFuture creates the condition and the lists only when something needs
them (a waiter in ``result()``/``exception()``/``done()``,
``add_done_callback``, ``concurrent.futures.wait``/``as_completed``), and
resolves a future nobody has looked at yet without them.

Correctness rests on one rule of ``concurrent.futures.Future`` (unchanged
from Python 3.2 through 3.13): every reader of the state and every
registration of a waiter or callback holds ``_condition``. Creating the
condition and resolving a future without one both happen under
``_LAZY_LOCK``, so either the resolver sees the condition and notifies
through it, or the waiter creates it afterwards and finds the state
FINISHED. If the running Python's Future does not have the expected
attributes, ``RecordFuture`` falls back to a plain Future subclass.

Reading a result costs no lock either: ``result()``, ``exception()`` and
``done()`` of a FINISHED future read its state directly (a future's result
and exception are written before its state, and never change afterwards).
A thread that must wait for a future nobody else watches sleeps on one
process-wide condition, ``_HUB``, which the reader wakes once per Results
frame (and only when somebody sleeps on it), instead of on a condition of
the future's own. :func:`resolve_many` resolves a whole frame's futures
under a single acquisition of ``_LAZY_LOCK``.

Futures start RUNNING: the record is already handed to the daemon, so
``cancel()`` returns False rather than pretending to stop it.

``accepted()`` (docs/protocol.md, "Acceptance") reads the connection's
:class:`~kpld._acceptance.AcceptedRuns` and the future's own state, and
sleeps on ``_HUB`` like ``result()``: the reader wakes it after each
Accepted frame as after each Results frame. A future holds its record id
and its connection's runs, nothing per record is done on acceptance.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures._base import FINISHED, RUNNING
from typing import Any, Callable, Dict, List, Optional

from ._acceptance import ACCEPTED, AcceptedRuns, verdict

__all__ = ["RecordFuture", "resolve_many", "wake_waiters", "hub_wait"]

_LAZY_LOCK = threading.Lock()
#: Where threads sleep that wait for a future (or a RecordBatch) nobody
#: watches through a condition of its own; see the module doc.
_HUB = threading.Condition(threading.Lock())
#: How many threads sleep on _HUB; changed only under _HUB. A resolver reads
#: it after writing the states, a waiter raises it before reading a state,
#: so a resolver that reads 0 made its states visible to every later check.
_hub_sleepers = 0


def hub_wait(is_done: Callable[[], bool], timeout: Optional[float]) -> bool:
    """Sleep until ``is_done()`` or ``timeout`` seconds passed; whether it is done."""
    global _hub_sleepers
    with _HUB:
        _hub_sleepers += 1
        try:
            if timeout is None:
                while not is_done():
                    _HUB.wait()
                return True
            deadline = time.monotonic() + timeout
            while not is_done():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                _HUB.wait(left)
            return True
        finally:
            _hub_sleepers -= 1


def wake_waiters() -> None:
    """Wake the threads sleeping in :func:`hub_wait` (after resolving something)."""
    if _hub_sleepers:
        with _HUB:
            _HUB.notify_all()


#: Runs of a future that belongs to no connection: nothing is ever accepted.
_NO_RUNS = AcceptedRuns()


class _Accepting:
    """``accepted()`` for the record futures (both kinds below)."""

    _rid: int
    _runs: AcceptedRuns
    _state: str

    def _acceptance(self) -> Any:
        """ACCEPTED, the exception accepted() raises, or None (not known yet)."""
        if self._rid in self._runs:
            return ACCEPTED
        if self._state == FINISHED:
            exc = self._exception  # type: ignore[attr-defined]
            return verdict(self._result if exc is None else exc)  # type: ignore[attr-defined]
        return None

    def accepted(self, timeout: Optional[float] = None) -> None:
        """Block until the daemon has accepted the record (in its buffers, or
        in its spool for a ``durability = "disk"`` stream), up to ``timeout``
        seconds.

        Raises the record's :class:`kpld.RecordFailed` (``refused`` True,
        e.g. code ``"InvalidPartitionKey"`` or ``"Busy"``) when the daemon
        refused it, :class:`kpld.ConnectionError` when the connection was
        lost before the daemon accepted it (it may or may not have it:
        resend), and ``concurrent.futures.TimeoutError`` after ``timeout``.
        Returns at once when the record's successful result already came.
        """
        v = self._acceptance()
        if v is None:
            if not hub_wait(lambda: self._acceptance() is not None, timeout):
                raise FuturesTimeoutError(f"record {self._rid} not accepted by kpld within {timeout} s")
            v = self._acceptance()
        if v is not ACCEPTED:
            raise v


_EXPECTED_ATTRS = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}


class _Lazy:
    """Non-data descriptor: builds the attribute on first access, under the lock."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type = None) -> Any:  # type: ignore[assignment]
        if obj is None:
            return self
        with _LAZY_LOCK:
            d: Dict[str, Any] = obj.__dict__
            value = d.get(self.name)
            if value is None:
                value = d[self.name] = self.factory()
            return value


class _LazyFuture(_Accepting, Future):  # type: ignore[type-arg]
    _condition = _Lazy(threading.Condition)
    _waiters = _Lazy(list)
    _done_callbacks = _Lazy(list)

    def __init__(self, runs: AcceptedRuns = _NO_RUNS, rid: int = 0) -> None:  # not calling Future.__init__
        self._state = RUNNING
        self._result = None
        self._exception = None
        self._runs = runs
        self._rid = rid

    # -- reading, without a lock once FINISHED ----------------------------

    def _wait(self, timeout: Optional[float]) -> None:
        if "_condition" in self.__dict__:  # watched by wait()/callbacks: its own condition
            super().exception(timeout)  # waits; raises TimeoutError
        elif not hub_wait(lambda: self._state == FINISHED, timeout):
            raise FuturesTimeoutError()

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state != FINISHED:
            self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        if self._state != FINISHED:
            self._wait(timeout)
        return self._exception  # type: ignore[no-any-return]

    def done(self) -> bool:
        return self._state == FINISHED  # type: ignore[no-any-return]

    def running(self) -> bool:
        return self._state == RUNNING  # type: ignore[no-any-return]

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def __repr__(self) -> str:
        state = self._state
        if state == FINISHED:
            if self._exception is not None:
                what = f" raised {self._exception.__class__.__name__}"
            else:
                what = f" returned {self._result.__class__.__name__}"
        else:
            what = ""
        return f"<{self.__class__.__name__} at {id(self):#x} state={state.lower()}{what}>"

    # -- resolving ----------------------------------------------------------

    def set_result(self, result: Any) -> None:
        self._set_result(result)
        wake_waiters()

    def set_exception(self, exception: Any) -> None:
        self._set_exception(exception)
        wake_waiters()

    def _set_result(self, result: Any) -> None:
        d = self.__dict__
        finished = False
        if "_condition" not in d:
            with _LAZY_LOCK:
                if "_condition" not in d:
                    finished = self._state == FINISHED
                    if not finished:
                        self._result = result
                        self._state = FINISHED
                        return
            if finished:  # raised outside the lock: repr() may need it
                raise InvalidStateError(f"{self._state}: {self!r}")
        super().set_result(result)

    def _set_exception(self, exception: Any) -> None:
        d = self.__dict__
        finished = False
        if "_condition" not in d:
            with _LAZY_LOCK:
                if "_condition" not in d:
                    finished = self._state == FINISHED
                    if not finished:
                        self._exception = exception
                        self._state = FINISHED
                        return
            if finished:  # raised outside the lock: repr() may need it
                raise InvalidStateError(f"{self._state}: {self!r}")
        super().set_exception(exception)


class _PlainFuture(_Accepting, Future):  # type: ignore[type-arg]
    def __init__(self, runs: AcceptedRuns = _NO_RUNS, rid: int = 0) -> None:
        super().__init__()
        self._runs = runs
        self._rid = rid
        self.set_running_or_notify_cancel()

    # accepted() sleeps on the hub: wake it on every resolution
    def set_result(self, result: Any) -> None:
        super().set_result(result)
        wake_waiters()

    def set_exception(self, exception: Any) -> None:
        super().set_exception(exception)
        wake_waiters()


def _resolve_many_lazy(futures: List[Any], outcomes: List[Any], ok_class: type) -> int:
    failed = 0
    watched: List[int] = []
    with _LAZY_LOCK:
        for i, fut in enumerate(futures):
            if fut is None:
                continue
            outcome = outcomes[i]
            if "_condition" in fut.__dict__:
                watched.append(i)
                if outcome.__class__ is not ok_class:
                    failed += 1
            elif outcome.__class__ is ok_class:
                fut._result = outcome
                fut._state = FINISHED
            else:
                fut._exception = outcome
                fut._state = FINISHED
                failed += 1
    for i in watched:  # outside the lock: these notify and run callbacks
        outcome = outcomes[i]
        if outcome.__class__ is ok_class:
            Future.set_result(futures[i], outcome)
        else:
            Future.set_exception(futures[i], outcome)
    wake_waiters()
    return failed


def _resolve_many_plain(futures: List[Any], outcomes: List[Any], ok_class: type) -> int:
    failed = 0
    for fut, outcome in zip(futures, outcomes):
        if fut is None:
            continue
        if outcome.__class__ is ok_class:
            Future.set_result(fut, outcome)
        else:
            Future.set_exception(fut, outcome)
            failed += 1
    wake_waiters()
    return failed


def _lazy_future_fits() -> bool:
    probe = Future()  # type: ignore[var-annotated]
    return set(vars(probe)) == _EXPECTED_ATTRS


#: The future type of every record: a concurrent.futures.Future subclass.
RecordFuture = _LazyFuture if _lazy_future_fits() else _PlainFuture

#: resolve_many(futures, outcomes, ok_class) -> failed: resolve ``futures[i]``
#: (skipping None) with ``outcomes[i]``: its result when of ``ok_class``,
#: else its exception. Returns how many got an exception.
resolve_many = _resolve_many_lazy if RecordFuture is _LazyFuture else _resolve_many_plain

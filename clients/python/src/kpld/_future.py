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

Futures start RUNNING: the record is already handed to the daemon, so
``cancel()`` returns False rather than pretending to stop it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import FINISHED, RUNNING
from typing import Any, Callable, Dict

__all__ = ["RecordFuture"]

_LAZY_LOCK = threading.Lock()
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


class _LazyFuture(Future):  # type: ignore[type-arg]
    _condition = _Lazy(threading.Condition)
    _waiters = _Lazy(list)
    _done_callbacks = _Lazy(list)

    def __init__(self) -> None:  # deliberately not calling Future.__init__
        self._state = RUNNING
        self._result = None
        self._exception = None

    def set_result(self, result: Any) -> None:
        d = self.__dict__
        if "_condition" not in d:
            with _LAZY_LOCK:
                if "_condition" not in d:
                    if self._state == FINISHED:
                        raise InvalidStateError(f"{self._state}: {self!r}")
                    self._result = result
                    self._state = FINISHED
                    return
        super().set_result(result)

    def set_exception(self, exception: Any) -> None:
        d = self.__dict__
        if "_condition" not in d:
            with _LAZY_LOCK:
                if "_condition" not in d:
                    if self._state == FINISHED:
                        raise InvalidStateError(f"{self._state}: {self!r}")
                    self._exception = exception
                    self._state = FINISHED
                    return
        super().set_exception(exception)


class _PlainFuture(Future):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__()
        self.set_running_or_notify_cancel()


def _lazy_future_fits() -> bool:
    probe = Future()  # type: ignore[var-annotated]
    return set(vars(probe)) == _EXPECTED_ATTRS


#: The future type of every record: a concurrent.futures.Future subclass.
RecordFuture = _LazyFuture if _lazy_future_fits() else _PlainFuture

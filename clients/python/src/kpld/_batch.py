"""RecordBatch: one waitable for a whole ``put_batch`` call, holding compact
per-record results that are decoded only when read.

Where ``put_records`` gives every record a future (a Python object, a slot
in a dict, a Result decoded as the frame arrives), a RecordBatch keeps, per
record, two list slots: the received frame bytes holding its RecordResult
and the offset of that RecordResult in them. ``result(i)`` decodes record
``i`` on first read (and keeps what it decoded). Failures are decoded as
they arrive, since they are few and ``failed`` must count them.

Invariants: a record's slot in ``_bufs`` is None until its result arrived;
it is written after its offset (a thread that sees it set sees the
offset); ``_remaining`` and ``_failed`` change only under ``_lock`` (the
reader thread and a writer whose send failed may both resolve records of
one batch). Waiting threads sleep on the process-wide condition of
``_future`` and are woken once per Results frame.
"""

from __future__ import annotations

import threading
from concurrent.futures import TimeoutError as FuturesTimeoutError
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

from . import _codec
from ._acceptance import ACCEPTED, AcceptedRuns, verdict
from ._future import hub_wait, wake_waiters
from .errors import KpldError
from .types import Result

__all__ = ["RecordBatch"]

Outcome = Union[Result, KpldError]


class RecordBatch:
    """The records of one :meth:`kpld.Producer.put_batch` call and their results.

    ``len(batch)`` records, in the order given. ``wait()`` blocks until every
    record has its final result; ``failed`` and ``succeeded`` count them;
    ``result(i)`` returns record ``i``'s :class:`kpld.Result` or raises its
    failure (:class:`kpld.RecordFailed`, :class:`kpld.Busy`,
    :class:`kpld.ConnectionError`), exactly as the future of ``put_records``
    would. ``failures()`` lists ``(index, exception)`` of the failed records.
    Safe to read from any thread.
    """

    __slots__ = ("first_id", "_count", "_remaining", "_failed", "_bufs", "_offs", "_lock", "_runs")

    def __init__(self, first_id: int, count: int, runs: Optional[AcceptedRuns] = None) -> None:
        #: Record id of the first record (the daemon's id; ids are consecutive).
        self.first_id = first_id
        self._count = count
        self._remaining = count
        self._failed = 0
        #: Per record: None (no result yet), the frame bytes holding its
        #: RecordResult, or its decoded outcome (a Result or an exception).
        self._bufs: List[Any] = [None] * count
        #: Per record: where its RecordResult starts in its frame bytes.
        self._offs: List[int] = [0] * count
        self._lock = threading.Lock()
        #: Its connection's accepted ids.
        self._runs = runs if runs is not None else AcceptedRuns()

    # -- waiting -------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def done(self) -> bool:
        """Whether every record has its final result."""
        return self._remaining == 0

    def wait(self, timeout: Optional[float] = None) -> "RecordBatch":
        """Block until every record has its final result; returns the batch.
        Raises ``concurrent.futures.TimeoutError`` when ``timeout`` seconds
        pass first."""
        if self._remaining and not hub_wait(self.done, timeout):
            raise FuturesTimeoutError(f"{self._remaining} of {self._count} records still without a result")
        return self

    @property
    def failed(self) -> int:
        """Records whose final result is a failure, so far."""
        return self._failed

    @property
    def succeeded(self) -> int:
        """Records whose final result is a success, so far."""
        return self._count - self._remaining - self._failed

    # -- acceptance ------------------------------------------------------------

    def _acceptance_of(self, i: int) -> Any:
        """ACCEPTED, the exception accepted(i) raises, or None (not known yet)."""
        if self.first_id + i in self._runs:
            return ACCEPTED
        held = self._bufs[i]
        if held is None:
            return None
        return ACCEPTED if held.__class__ is bytes else verdict(held)  # bytes: a success, decoded later

    def _first_not_accepted(self) -> Any:
        """None while some record is not settled; else ACCEPTED or the
        exception of the lowest-index record not accepted."""
        for rid in self._runs.missing(self.first_id, self._count):
            v = self._acceptance_of(rid - self.first_id)
            if v is not ACCEPTED:
                if v is None:
                    return None
                for later in self._runs.missing(rid, self.first_id + self._count - rid):
                    if self._acceptance_of(later - self.first_id) is None:
                        return None  # raise only once every record is settled
                return v
        return ACCEPTED

    def accepted(self, i: Optional[int] = None, timeout: Optional[float] = None) -> None:
        """Block until the daemon has accepted every record of the batch
        (or, with ``i``, record ``i``), up to ``timeout`` seconds.

        Without ``i``, once every record is accepted or known not to be, it
        raises the error of the first record (lowest index) that was not:
        its :class:`kpld.RecordFailed` with ``refused`` True, or
        :class:`kpld.ConnectionError` when the connection was lost before
        the daemon accepted it; ``failures()`` then lists every failure.
        With ``i``, raises record ``i``'s error. Raises
        ``concurrent.futures.TimeoutError`` after ``timeout`` seconds.
        """
        if i is None:
            check = self._first_not_accepted
        else:
            if i < 0:
                i += self._count
            if not 0 <= i < self._count:
                raise IndexError(f"record index {i} out of range for a batch of {self._count}")
            index = i
            check = lambda: self._acceptance_of(index)  # noqa: E731
        v = check()
        if v is None:
            if not hub_wait(lambda: check() is not None, timeout):
                what = "every record of the batch" if i is None else f"record {i} of the batch"
                raise FuturesTimeoutError(f"{what} not accepted by kpld within {timeout} s")
            v = check()
        if v is not ACCEPTED:
            raise v

    # -- reading -------------------------------------------------------------

    def _outcome(self, i: int, timeout: Optional[float]) -> Outcome:
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"record index {i} out of range for a batch of {self._count}")
        bufs = self._bufs
        if bufs[i] is None and not hub_wait(lambda: bufs[i] is not None, timeout):
            raise FuturesTimeoutError(f"record {i} of the batch still has no result")
        held = bufs[i]
        if held.__class__ is not bytes:
            return held  # type: ignore[no-any-return]
        out: List[Any] = []
        _codec.decode_result_at(held, self._offs[i], out)
        bufs[i] = out[0]  # another reader may decode it too: equal values, no harm
        return out[0]  # type: ignore[no-any-return]

    def result(self, i: int, timeout: Optional[float] = None) -> Result:
        """Record ``i``'s Result (waiting up to ``timeout`` seconds for it), or
        raises its failure."""
        o = self._outcome(i, timeout)
        if o.__class__ is Result:
            return o  # type: ignore[return-value]
        raise o  # type: ignore[misc]

    def exception(self, i: int, timeout: Optional[float] = None) -> Optional[KpldError]:
        """Record ``i``'s failure, or None when it succeeded."""
        o = self._outcome(i, timeout)
        return None if o.__class__ is Result else o  # type: ignore[return-value]

    def outcomes(self, timeout: Optional[float] = None) -> List[Outcome]:
        """Every record's Result or failure, in order (waits for them all)."""
        self.wait(timeout)
        return [self._outcome(i, None) for i in range(self._count)]

    def failures(self, timeout: Optional[float] = None) -> List[Tuple[int, KpldError]]:
        """``(index, exception)`` of every failed record (waits for them all)."""
        self.wait(timeout)
        if not self._failed:
            return []
        return [(i, o) for i, o in enumerate(self._bufs) if o.__class__ is not bytes and o.__class__ is not Result]

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self.outcomes())

    def __repr__(self) -> str:
        state = "done" if self._remaining == 0 else f"{self._remaining} pending"
        return f"<kpld.RecordBatch of {self._count}: {state}, {self._failed} failed>"

    # -- resolving (the connection's side) -------------------------------------

    def _settled(self, done: int, failed: int) -> None:
        """``done`` more records have their result, ``failed`` of them failures."""
        with self._lock:
            self._remaining -= done
            self._failed += failed

    def _fail(self, record_id: int, error: BaseException) -> None:
        """Record ``record_id`` failed locally (never sent, or its connection lost)."""
        self._bufs[record_id - self.first_id] = error
        self._settled(1, 1)
        wake_waiters()


def fail_owner(owner: Any, record_id: int, make_error: Callable[[], BaseException]) -> None:
    """Fail record ``record_id``, owned by a future or a RecordBatch."""
    if owner.__class__ is RecordBatch:
        owner._fail(record_id, make_error())
    else:
        owner.set_exception(make_error())

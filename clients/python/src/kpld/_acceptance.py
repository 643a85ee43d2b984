"""Which records the daemon has accepted, per connection, and what
``accepted()`` decides from it (docs/protocol.md, "Acceptance").

The daemon names accepted records in ``Accepted`` messages as runs of
consecutive ids; a refused record instead has ``refused`` set in its
failure. :class:`AcceptedRuns` keeps the union of the runs as sorted,
merged, disjoint ``[start, end)`` intervals: clients number records one
after another, so a connection's whole history is usually one interval and
recording a frame's acceptance costs one bisect, whatever its record count.
Nothing is done per record unless somebody asks (``accepted()``).

A record is settled as to acceptance when an ``Accepted`` named it (accepted),
or its outcome is known: a success or a daemon failure with ``refused``
unset (accepted: a result never comes for a record that was not taken,
unless refused), a refused failure (refused), or a local ConnectionError
without an ``Accepted`` (lost: the daemon may or may not have it).

Pruning: intervals are needed only for records whose outcome is not known
yet, or is a ConnectionError (the lost connection's records, which stay in
``pending`` until the loss); so when the list grows, intervals below the
smallest id still pending are dropped.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from typing import Any, Dict, List, Optional

from .errors import ConnectionError, RecordFailed
from .types import Result

__all__ = ["AcceptedRuns", "verdict", "ACCEPTED"]

#: ``verdict`` of an accepted record.
ACCEPTED = True

_PRUNE_AT = 64


class AcceptedRuns:
    """The accepted ids of one connection. ``add`` runs in the reader (one
    call per Accepted frame); ``__contains__`` in any thread."""

    __slots__ = ("_starts", "_ends", "_lock", "_pending", "_prune_at")

    def __init__(self, pending: Optional[Dict[int, Any]] = None) -> None:
        self._starts: List[int] = []
        self._ends: List[int] = []
        # Lists change in several steps: readers in other threads must not
        # see them half way. One acquisition per frame or per check.
        self._lock = threading.Lock()
        #: The connection's record id -> owner table, for pruning.
        self._pending = pending
        self._prune_at = _PRUNE_AT

    def add(self, first_ids: List[int], counts: List[int]) -> None:
        """Record the runs of one Accepted message."""
        with self._lock:
            starts, ends = self._starts, self._ends
            for first, count in zip(first_ids, counts):
                if count:
                    self._insert(starts, ends, first, first + count)
            if len(starts) > self._prune_at:
                self._prune()

    @staticmethod
    def _insert(starts: List[int], ends: List[int], s: int, e: int) -> None:
        if starts and s == ends[-1]:  # the common case: continues the last run
            ends[-1] = e
            return
        i = bisect_right(starts, s)
        # merge with the interval before when it touches [s, e)
        if i and ends[i - 1] >= s:
            i -= 1
            s = starts[i]
            e = max(e, ends[i])
        j = i
        while j < len(starts) and starts[j] <= e:
            e = max(e, ends[j])
            j += 1
        starts[i:j] = [s]
        ends[i:j] = [e]

    def _prune(self) -> None:
        pending = self._pending
        if pending is not None:
            try:
                keys = list(pending)  # a copy: writers add to it meanwhile
            except RuntimeError:  # changed during the copy (no GIL): prune next time
                return
            low = min(keys) if keys else None
            starts, ends = self._starts, self._ends
            if low is None:
                del starts[:], ends[:]
            else:
                k = 0
                while k < len(ends) and ends[k] <= low:
                    k += 1
                del starts[:k], ends[:k]
        self._prune_at = max(_PRUNE_AT, 2 * len(self._starts))

    def __contains__(self, rid: int) -> bool:
        with self._lock:
            i = bisect_right(self._starts, rid) - 1
            return i >= 0 and rid < self._ends[i]

    def missing(self, first: int, count: int) -> List[int]:
        """The ids of ``first .. first+count-1`` no Accepted named (yet)."""
        out: List[int] = []
        end = first + count
        with self._lock:
            starts, ends = self._starts, self._ends
            i = max(bisect_right(starts, first) - 1, 0)
            at = first
            while at < end and i < len(starts):
                if ends[i] <= at:
                    i += 1
                    continue
                if starts[i] > at:
                    out.extend(range(at, min(starts[i], end)))
                at = max(at, ends[i])
                i += 1
            if at < end:
                out.extend(range(at, end))
        return out

    def __len__(self) -> int:
        return len(self._starts)


def verdict(outcome: Any) -> Any:
    """What a record's known outcome says of its acceptance, when no
    Accepted named it: :data:`ACCEPTED`, or the exception ``accepted()``
    raises (a refusal, or a lost connection)."""
    if outcome.__class__ is Result:
        return ACCEPTED
    if isinstance(outcome, RecordFailed):
        return outcome if outcome.refused else ACCEPTED
    if isinstance(outcome, ConnectionError):
        return outcome
    return outcome  # anything else local: never taken

"""The exceptions kpld raises, all beneath one root, :class:`KpldError`.

::

    KpldError
    ├── ConnectionError   the daemon cannot be reached, or the connection was lost
    ├── ProtocolError     the daemon sent something this client cannot understand
    └── RecordFailed      the daemon answered a record with a final failure
        └── Busy          ... with code "Busy" (its buffers were full and
                          the producer was created with busy_if_full=True)

``kpld.ConnectionError`` deliberately shadows the builtin name inside this
package; it is *not* a subclass of the builtin ``ConnectionError`` (catch
``kpld.KpldError`` to catch everything this package raises).
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from .types import Attempt

__all__ = ["KpldError", "ConnectionError", "ProtocolError", "RecordFailed", "Busy"]


class KpldError(Exception):
    """Root of every error raised by the kpld client."""


class ConnectionError(KpldError):  # noqa: A001 - shadows the builtin on purpose
    """The daemon could not be reached, or the connection to it was lost.

    Raised by ``put_record``/``put_records``/``flush`` when no connection can
    be made, and set on the future of every record that was in flight when
    an established connection was lost (those records have no final result
    from the daemon: they may or may not have been delivered).

    ``code`` and ``message`` hold the daemon's ``Error`` frame when it sent
    one before closing (e.g. ``"ShuttingDown"``), else ``code`` is ``None``.
    """

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProtocolError(KpldError):
    """The daemon sent a frame this client cannot decode, answered the
    handshake with an unsupported protocol version, or refused a frame of
    this client (``code`` is then the daemon's error code, e.g.
    ``"MalformedFrame"``)."""

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RecordFailed(KpldError):
    """The final result of a record is a failure.

    ``code`` is the daemon's machine-readable error code (for example
    ``"InvalidPartitionKey"``, ``"Expired"``, ``"ResourceNotFoundException"``),
    ``message`` its human-readable detail and ``attempts`` every attempt made
    to send the record (empty when it was refused before any attempt).

    ``refused`` is True when the daemon never accepted the record (it was
    invalid, ``Busy``, ``ShuttingDown`` before it was taken, the spool was
    full, or it never left this process): no copy of it is in the daemon and
    sending it again cannot make a duplicate. A failure with ``refused``
    False is of a record the daemon had accepted.
    """

    def __init__(
        self, code: str, message: str, attempts: Optional[List[Attempt]] = None, refused: bool = False
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.attempts: List[Attempt] = attempts if attempts is not None else []
        self.refused = refused

    def __reduce__(self) -> Tuple[Any, ...]:  # keep pickling (e.g. across processes) working
        return (type(self), (self.code, self.message, self.attempts, self.refused))


class Busy(RecordFailed):
    """A record failed with code ``"Busy"``: the daemon's buffers were full
    and the request asked to fail rather than wait (``busy_if_full=True``).
    Retrying later may succeed."""


def record_failure(
    code: str, message: str, attempts: Optional[List[Attempt]] = None, refused: bool = False
) -> RecordFailed:
    """The exception for a failed record: :class:`Busy` for code "Busy"."""
    if code == "Busy":
        return Busy(code, message, attempts, refused)
    return RecordFailed(code, message, attempts, refused)

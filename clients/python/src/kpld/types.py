"""Plain value types of the public API: a record's :class:`Result`, its
:class:`Attempt` s, and what the daemon said about itself (:class:`ServerInfo`).

All are frozen dataclasses (with ``__slots__`` on Python 3.10+)."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import List

__all__ = ["Attempt", "Result", "ServerInfo", "ProducerStats", "Compression"]

_SLOTS = {"slots": True} if sys.version_info >= (3, 10) else {}


class Compression(enum.IntEnum):
    """How the daemon compresses a record's data before aggregating it
    (``compression=`` of a put; the .proto's ``Compression``). Consumers get
    the compressed bytes and must decompress them. ``put_record`` also
    accepts the names "default", "none", "gzip" and "zlib"."""

    #: The stream's setting (``compression`` in the daemon's config).
    DEFAULT = 0
    NONE = 1
    #: RFC 1952 (gzip), at the stream's compression_level.
    GZIP = 2
    #: RFC 1950 (zlib), at the stream's compression_level.
    ZLIB = 3


@dataclass(frozen=True, **_SLOTS)
class Attempt:
    """One attempt of the daemon to send a record to Kinesis."""

    #: Whether this attempt put the record.
    success: bool
    #: Kinesis' (or the daemon's) error code when it failed, else "".
    error_code: str
    #: Detail of the error, else "".
    error_message: str
    #: Milliseconds from the end of the previous attempt (or the record's
    #: arrival at the daemon, for the first) to the start of this one:
    #: buffering and backoff.
    delay_ms: int
    #: Milliseconds the PutRecords call of this attempt took.
    duration_ms: int


@dataclass(frozen=True, **_SLOTS)
class Result:
    """The successful final result of one record."""

    #: The shard the record was put into, e.g. "shardId-000000000003".
    shard_id: str
    #: Sequence number of the Kinesis record carrying it (decimal string).
    sequence_number: str
    #: The record's index inside its KPL aggregate (0 when sent alone).
    sub_sequence_number: int
    #: Every attempt to send the record, in order; the last one succeeded.
    attempts: List[Attempt]


@dataclass(frozen=True, **_SLOTS)
class ServerInfo:
    """What the daemon said in its handshake reply."""

    protocol_version: int
    #: e.g. "kpld 0.1.0"
    server_version: str
    #: Largest frame the daemon accepts (bytes after the length prefix);
    #: the client splits batches to stay below it.
    max_frame_size: int
    #: Largest data + partition key of one record.
    max_record_size: int


@dataclass(frozen=True, **_SLOTS)
class ProducerStats:
    """A producer's record counters since it was created (see ``Producer.stats``)."""

    #: Records handed to put_record / put_records.
    records_put: int
    #: Records whose final result is a success.
    records_succeeded: int
    #: Records whose final result is a failure (RecordFailed, Busy, or
    #: ConnectionError for records in flight on a lost connection).
    records_failed: int
    #: Records still waiting for their result.
    records_in_flight: int

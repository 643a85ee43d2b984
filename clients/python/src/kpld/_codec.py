"""Framing and the hot paths of the socket protocol, encoded by hand.

Wire format (proto/kpld.proto): every frame is a 4-byte big-endian length
followed by that many bytes of one protobuf message::

    +--------+--------+--------+--------+==================================+
    |   length (u32, big-endian)        |  ClientMessage / ServerMessage   |
    +--------+--------+--------+--------+==================================+

Two messages carry nearly all the traffic and are coded here without any
reflection: ``ClientMessage{put: PutRequest}`` (:func:`encode_put_frames`)
and ``ServerMessage{results: Results}`` (:func:`decode_server_message`).
Both are exact: the encoder writes the canonical bytes ``_schema.encode``
writes, and the tests hold them to the golden frames in ``tests/golden``.
The rare messages go through the generic codec in ``_schema``.

Invariant: nothing here does I/O or touches a future, so the sync and the
asyncio producers share it unchanged.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from . import _schema
from .errors import ProtocolError, record_failure
from .types import Attempt, Compression, Result, ServerInfo

PROTOCOL_VERSION = 1

#: Bytes of the length prefix.
PREFIX_SIZE = 4
#: What a frame body may hold before the daemon's HelloReply tells us better.
DEFAULT_MAX_FRAME_SIZE = 8 * 1024 * 1024
#: Room kept in a PutRequest frame for the ClientMessage/PutRequest headers
#: (tag + varint length + busy_if_full).
_PUT_OVERHEAD = 16

Data = Union[bytes, bytearray, memoryview, str]
RecordInput = Union[Tuple[str, Data], Tuple[str, Data, Optional[str]], Dict[str, Any]]
Outcome = Union[Result, Exception]

_encode_varint = _schema.encode_varint
_decode_varint = _schema.decode_varint

# Field headers (tag byte + length varint) of common lengths, precomputed.
# Length 0 maps to b"" for the implicit-presence fields: proto3 omits a
# default value, so an empty partition key / data / stream writes nothing.
_HEADER_CACHE_LIMIT = 1 << 14


def _header_table(tag: int, omit_empty: bool) -> List[bytes]:
    table = [bytes((tag,)) + _encode_varint(n) for n in range(_HEADER_CACHE_LIMIT)]
    if omit_empty:
        table[0] = b""
    return table


_PK_HDR = _header_table(0x1A, True)  # Record.partition_key (3, LEN)
_DATA_HDR = _header_table(0x2A, True)  # Record.data (5, LEN)
_REC_HDR = _header_table(0x0A, False)  # PutRequest.records (1, LEN)


def _len_header(table: List[bytes], tag: int, n: int) -> bytes:
    if n < _HEADER_CACHE_LIMIT:
        return table[n]
    return bytes((tag,)) + _encode_varint(n)


def _id_field(tag: int, value: int) -> bytes:
    """tag + varint for a uint64 field; b"" for 0 (proto3 default)."""
    if value < 0x4000:
        if value < 0x80:
            return bytes((tag, value)) if value else b""
        return bytes((tag, (value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((tag, (value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes(
            (tag, (value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, ((value >> 14) & 0x7F) | 0x80, value >> 21)
        )
    return bytes((tag,)) + _encode_varint(value)


def frame(body: bytes) -> bytes:
    """``body`` with its 4-byte big-endian length prefix."""
    return len(body).to_bytes(4, "big") + body


# --------------------------------------------------------------------------
# client -> server


def encode_hello(client_name: str, want_accepted: bool = True) -> bytes:
    """The Hello frame (with prefix); ``want_accepted`` asks for Accepted messages."""
    return frame(
        _schema.encode(
            "ClientMessage",
            {
                "hello": {
                    "protocol_version": PROTOCOL_VERSION,
                    "client_name": client_name,
                    "want_accepted": want_accepted,
                }
            },
        )
    )


def encode_flush(flush_id: int) -> bytes:
    """A FlushRequest frame (with prefix)."""
    body = _id_field(0x08, flush_id)
    return frame(b"\x1a" + _encode_varint(len(body)) + body)


def encode_stats(stats_id: int) -> bytes:
    """A StatsRequest frame (with prefix)."""
    body = _id_field(0x08, stats_id)
    return frame(b"\x22" + _encode_varint(len(body)) + body)


def _as_bytes(data: Any) -> bytes:
    t = type(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    if t is bytearray or isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, memoryview):
        return data.tobytes()
    raise TypeError(f"record data must be bytes, bytearray, memoryview or str, not {t.__name__}")


def _ehk_field(ehk: Any) -> bytes:
    if isinstance(ehk, bool) or not isinstance(ehk, (str, int)):
        raise TypeError(f"explicit_hash_key must be a str (decimal) or int, not {type(ehk).__name__}")
    b = str(ehk).encode("utf-8", "surrogatepass")
    return b"\x22" + _encode_varint(len(b)) + b


_COMPRESSION_NAMES = {c.name.lower(): int(c) for c in Compression}


def _compression_field(value: Any) -> bytes:
    """Record.compression (6, VARINT); b"" for the default."""
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            value = _COMPRESSION_NAMES[value.lower()]
        except KeyError:
            raise ValueError(
                f"compression must be one of {sorted(_COMPRESSION_NAMES)} or a kpld.Compression, not {value!r}"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 31:
        raise TypeError(f"compression must be a kpld.Compression or its name, not {value!r}")
    return b"\x30" + _encode_varint(int(value)) if value else b""


def _split(item: Any) -> Tuple[Any, Any, Any, bytes]:
    """(partition_key, data, explicit_hash_key, compression field) of one
    ``put_records`` item."""
    if isinstance(item, dict):
        try:
            return (
                item["partition_key"],
                item["data"],
                item.get("explicit_hash_key"),
                _compression_field(item.get("compression")),
            )
        except KeyError as e:
            raise TypeError(f"record dict is missing {e.args[0]!r}") from None
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1], None, b""
        if len(item) == 3:
            return item[0], item[1], item[2], b""
        if len(item) == 4:
            return item[0], item[1], item[2], _compression_field(item[3])
    raise TypeError(
        "each record must be a (partition_key, data) tuple or a dict with "
        f"'partition_key' and 'data', not {type(item).__name__}"
    )


#: Partition key -> its encoded Record.partition_key field (tag, length,
#: UTF-8), for keys that repeat across puts; cleared when it grows past
#: _KEY_FIELDS_MAX. Shared by every producer (puts may run in many threads:
#: a lost race only recomputes an equal value).
_KEY_FIELDS: Dict[str, bytes] = {}
_KEY_FIELDS_MAX = 1 << 14


class PutBatch:
    """The frames of one ``put_records`` call and the ids they carry.

    ``frames`` are ready to send (length prefix included). ``ids[i]`` is the
    record id of the i-th input record; ``too_large`` lists the indexes of
    records whose encoding alone exceeds the daemon's frame limit: they are
    in no frame and must be failed locally.
    """

    __slots__ = ("frames", "count", "first_id", "too_large")

    def __init__(self, frames: List[bytes], count: int, first_id: int, too_large: List[int]) -> None:
        self.frames = frames
        self.count = count
        self.first_id = first_id
        self.too_large = too_large


def encode_put_frames(
    first_id: int,
    stream: str,
    records: Iterable[Any],
    busy_if_full: bool = False,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> PutBatch:
    """Encode ``records`` as PutRequest frames, ids ``first_id, first_id+1, ...``.

    ``records`` holds ``(partition_key, data)``, ``(partition_key, data,
    explicit_hash_key)`` or ``(partition_key, data, explicit_hash_key,
    compression)`` tuples, or dicts with those keys. Frames are cut so
    that no body exceeds ``max_frame_size``. Raises TypeError for wrongly
    typed input before anything is returned (validation of the values is the
    daemon's job).
    """
    if not isinstance(stream, str):
        raise TypeError(f"stream must be a str, not {type(stream).__name__}")
    stream_b = stream.encode("utf-8", "surrogatepass")
    stream_part = (b"\x12" + _encode_varint(len(stream_b)) + stream_b) if stream_b else b""
    n_stream = len(stream_part)
    busy_part = b"\x10\x01" if busy_if_full else b""
    limit = max_frame_size - _PUT_OVERHEAD
    pk_hdr, data_hdr, rec_hdr = _PK_HDR, _DATA_HDR, _REC_HDR
    limit_cached = _HEADER_CACHE_LIMIT
    id_field = _id_field

    frames: List[bytes] = []
    too_large: List[int] = []
    parts: List[Any] = [None]  # [0] becomes the frame header
    extend = parts.extend
    size = 0
    rid = first_id
    index = 0

    def close_frame() -> None:
        parts.append(busy_part)
        body_len = size + len(busy_part)
        put_hdr = b"\x12" + _encode_varint(body_len)
        parts[0] = (body_len + len(put_hdr)).to_bytes(4, "big") + put_hdr
        frames.append(b"".join(parts))

    key_fields = _KEY_FIELDS
    for item in records:
        if type(item) is tuple and len(item) == 2:
            pk, data = item
            # the common case: a str key seen before, bytes data, a 3-byte id
            if type(pk) is str and type(data) is bytes and 0x4000 <= rid < 0x200000:
                kf = key_fields.get(pk)
                n_d = len(data)
                if kf is not None and n_d < limit_cached:
                    dh = data_hdr[n_d]
                    rl = 4 + n_stream + len(kf) + len(dh) + n_d
                    rh = rec_hdr[rl] if rl < limit_cached else _len_header(rec_hdr, 0x0A, rl)
                    total = len(rh) + rl
                    if size + total > limit and size:
                        close_frame()
                        del parts[1:]
                        size = 0
                    if total > limit:
                        too_large.append(index)
                    else:
                        extend(
                            (
                                rh,
                                bytes((8, (rid & 0x7F) | 0x80, ((rid >> 7) & 0x7F) | 0x80, rid >> 14)),
                                stream_part,
                                kf,
                                dh,
                                data,
                            )
                        )
                        size += total
                    rid += 1
                    index += 1
                    continue
            ehk = None
            comp = b""
        else:
            pk, data, ehk, comp = _split(item)
        if type(pk) is not str:
            if not isinstance(pk, str):
                raise TypeError(f"partition_key must be a str, not {type(pk).__name__}")
        pkb = pk.encode("utf-8", "surrogatepass")
        if type(data) is not bytes:
            data = _as_bytes(data)
        n_pk = len(pkb)
        n_d = len(data)
        ph = pk_hdr[n_pk] if n_pk < limit_cached else _len_header(pk_hdr, 0x1A, n_pk)
        if type(pk) is str and n_pk < 256:
            if len(key_fields) >= _KEY_FIELDS_MAX:
                key_fields.clear()
            key_fields[pk] = ph + pkb
        dh = data_hdr[n_d] if n_d < limit_cached else _len_header(data_hdr, 0x2A, n_d)
        idb = id_field(8, rid)  # Record.id (1, VARINT)
        if ehk is None and not comp:
            rl = len(idb) + n_stream + len(ph) + n_pk + len(dh) + n_d
            rh = rec_hdr[rl] if rl < limit_cached else _len_header(rec_hdr, 0x0A, rl)
            total = len(rh) + rl
            if size + total > limit and size:
                close_frame()
                del parts[1:]
                size = 0
            if total > limit:
                too_large.append(index)
            else:
                extend((rh, idb, stream_part, ph, pkb, dh, data))
                size += total
        else:
            eh = _ehk_field(ehk) if ehk is not None else b""
            rl = len(idb) + n_stream + len(ph) + n_pk + len(eh) + len(dh) + n_d + len(comp)
            rh = _len_header(rec_hdr, 0x0A, rl)
            total = len(rh) + rl
            if size + total > limit and size:
                close_frame()
                del parts[1:]
                size = 0
            if total > limit:
                too_large.append(index)
            else:
                extend((rh, idb, stream_part, ph, pkb, eh, dh, data, comp))
                size += total
        rid += 1
        index += 1
    if size:
        close_frame()
    return PutBatch(frames, index, first_id, too_large)


# --------------------------------------------------------------------------
# server -> client


def _decode_attempt(buf: bytes, pos: int, end: int) -> Attempt:
    success = False
    code = msg = ""
    delay = duration = 0
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag == 0x08 or tag == 0x20 or tag == 0x28:
            b = buf[pos]
            if b < 0x80:
                v = b
                pos += 1
            else:
                v, pos = _decode_varint(buf, pos, end)
            if tag == 0x08:
                success = v != 0
            elif tag == 0x20:
                delay = v
            else:
                duration = v
        elif tag == 0x12 or tag == 0x1A:
            n, pos = _decode_varint(buf, pos, end)
            stop = pos + n
            if stop > end:
                raise ProtocolError("Attempt: string past the end of the message")
            s = buf[pos:stop].decode("utf-8")
            pos = stop
            if tag == 0x12:
                code = s
            else:
                msg = s
        else:
            pos = _skip(buf, pos - 1, end)
    return Attempt(success, code, msg, delay, duration)


def _skip(buf: bytes, pos: int, end: int) -> int:
    """Skip the unknown field whose key starts at ``pos``."""
    key, pos = _decode_varint(buf, pos, end)
    return _schema.skip_field(buf, pos, end, key & 7)


def _varint_at(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    """Varint at ``pos`` with the 1- to 3-byte cases inline (ids, lengths)."""
    b0 = buf[pos]
    if b0 < 0x80:
        return b0, pos + 1
    b1 = buf[pos + 1]
    if b1 < 0x80:
        return (b0 & 0x7F) | (b1 << 7), pos + 2
    b2 = buf[pos + 2]
    if b2 < 0x80:
        return (b0 & 0x7F) | ((b1 & 0x7F) << 7) | (b2 << 14), pos + 3
    return _decode_varint(buf, pos, end)


def _result_maker() -> Any:
    """A fast constructor of Result: the frozen dataclass' own ``__init__``
    goes through ``object.__setattr__`` per field; with slots (3.10+) the
    slot descriptors do the same four writes in a third of the time."""
    fields = ("shard_id", "sequence_number", "sub_sequence_number", "attempts")
    if getattr(Result, "__slots__", None) != fields:
        return Result
    new = object.__new__
    set_shard, set_seq, set_sub, set_attempts = (getattr(Result, f).__set__ for f in fields)

    def make(shard: str, seq: str, sub: int, attempts: List[Attempt]) -> Result:
        r = new(Result)
        set_shard(r, shard)
        set_seq(r, seq)
        set_sub(r, sub)
        set_attempts(r, attempts)
        return r  # type: ignore[no-any-return]

    return make


make_result = _result_maker()


def decode_results(buf: bytes, pos: int, end: int, ids: List[int], outcomes: List[Outcome]) -> None:
    """Append the record id and the outcome (a Result or a RecordFailed) of
    each RecordResult of the ``Results`` message in ``buf[pos:end]`` to
    ``ids`` and ``outcomes``.

    Each RecordResult is read straight through in canonical field order
    (what the daemon writes); anything else (other order, repeated or
    unknown fields) is picked up by the general field loop that follows.
    Within one frame, equal shard ids decode to one string, a sequence
    number equal to the previous record's (records of one aggregate) to the
    same string, and a successful record's attempts (the bytes after its
    sub-sequence number, the same for every record of one PutRecords call)
    to a fresh list of shared, immutable Attempt objects.
    """
    append_id = ids.append
    append_outcome = outcomes.append
    varint_at = _varint_at
    make = make_result
    attempt_cache: Dict[bytes, Attempt] = {}
    tail_cache: Dict[bytes, List[Attempt]] = {}
    shard_cache: Dict[bytes, str] = {}
    last_seq_raw = b""
    last_seq = ""
    while pos < end:
        if buf[pos] != 0x0A:  # not Results.results (1, LEN)
            pos = _skip(buf, pos, end)
            continue
        n = buf[pos + 1]
        if n < 0x80:
            pos += 2
        else:
            n, pos = varint_at(buf, pos + 1, end)
        rend = pos + n
        if rend > end:
            raise ProtocolError("RecordResult past the end of the Results message")
        rid = sub = 0
        success = refused = False
        shard = seq = code = msg = ""
        # -- straight line: fields 1..8 in order, each optional --------------
        if pos < rend and buf[pos] == 0x08:  # id
            rid, pos = varint_at(buf, pos + 1, rend)
        if pos < rend and buf[pos] == 0x10:  # success
            v, pos = varint_at(buf, pos + 1, rend)
            success = v != 0
        if pos < rend and buf[pos] == 0x1A:  # shard_id
            n = buf[pos + 1]
            pos += 2
            if n >= 0x80:
                n, pos = varint_at(buf, pos - 1, rend)
            raw = buf[pos : pos + n]
            shard = shard_cache.get(raw)  # type: ignore[assignment]
            if shard is None:
                shard = shard_cache[raw] = raw.decode("utf-8")
            pos += n
        if pos < rend and buf[pos] == 0x22:  # sequence_number
            n = buf[pos + 1]
            pos += 2
            if n >= 0x80:
                n, pos = varint_at(buf, pos - 1, rend)
            raw = buf[pos : pos + n]
            if raw != last_seq_raw:
                last_seq_raw = raw
                last_seq = raw.decode("utf-8")
            seq = last_seq
            pos += n
        if pos < rend and buf[pos] == 0x28:  # sub_sequence_number
            sub, pos = varint_at(buf, pos + 1, rend)
        if success:
            tail = buf[pos:rend]
            known = tail_cache.get(tail)
            if known is not None:
                append_id(rid)
                append_outcome(make(shard, seq, sub, known[:]))
                pos = rend
                continue
            tail_start = pos
        attempts: List[Attempt] = []
        while pos < rend and buf[pos] == 0x32:  # attempts
            n, pos = varint_at(buf, pos + 1, rend)
            stop = pos + n
            raw = buf[pos:stop]
            a = attempt_cache.get(raw)
            if a is None:
                if stop > rend:
                    raise ProtocolError("RecordResult: attempt past the end of the message")
                a = attempt_cache[raw] = _decode_attempt(buf, pos, stop)
            attempts.append(a)
            pos = stop
        if success and pos == rend:  # attempts only: the next record of the call hits the cache
            tail_cache[buf[tail_start:rend]] = attempts[:]
        if pos < rend and buf[pos] == 0x3A:  # error_code
            n, pos = varint_at(buf, pos + 1, rend)
            code = buf[pos : pos + n].decode("utf-8")
            pos += n
        if pos < rend and buf[pos] == 0x42:  # error_message
            n, pos = varint_at(buf, pos + 1, rend)
            msg = buf[pos : pos + n].decode("utf-8")
            pos += n
        if pos < rend and buf[pos] == 0x48:  # refused
            v, pos = varint_at(buf, pos + 1, rend)
            refused = v != 0
        # -- general loop for whatever is left --------------------------------
        while pos < rend:
            tag = buf[pos]
            if tag == 0x08 or tag == 0x10 or tag == 0x28 or tag == 0x48:
                v, pos = varint_at(buf, pos + 1, rend)
                if tag == 0x08:
                    rid = v
                elif tag == 0x10:
                    success = v != 0
                elif tag == 0x48:
                    refused = v != 0
                else:
                    sub = v
            elif tag == 0x1A or tag == 0x22 or tag == 0x32 or tag == 0x3A or tag == 0x42:
                n, pos = varint_at(buf, pos + 1, rend)
                stop = pos + n
                if stop > rend:
                    raise ProtocolError("RecordResult: field past the end of the message")
                if tag == 0x32:
                    attempts.append(_decode_attempt(buf, pos, stop))
                else:
                    text = buf[pos:stop].decode("utf-8")
                    if tag == 0x1A:
                        shard = text
                    elif tag == 0x22:
                        seq = text
                    elif tag == 0x3A:
                        code = text
                    else:
                        msg = text
                pos = stop
            else:
                pos = _skip(buf, pos, rend)
        if pos != rend:
            raise ProtocolError("RecordResult: a field runs past the end of the message")
        append_id(rid)
        if success:
            append_outcome(make(shard, seq, sub, attempts))
        else:
            append_outcome(record_failure(code or "Unknown", msg, attempts, refused))


def scan_results(buf: bytes, pos: int, end: int, ids: List[int], starts: List[int], failed: List[int]) -> None:
    """Append the record id and the offset (of its 0x0A tag) of each
    RecordResult of the ``Results`` message in ``buf[pos:end]`` to ``ids``
    and ``starts``, and the positions (in ``ids``) of the failed ones to
    ``failed``, decoding nothing else: :func:`decode_result_at` decodes a
    record later, when somebody reads it. A record not laid out as the
    daemon writes it (id first, then success when true) is decoded in full
    to find its id and outcome."""
    append_id = ids.append
    append_start = starts.append
    varint_at = _varint_at
    while pos < end:
        if buf[pos] != 0x0A:
            pos = _skip(buf, pos, end)
            continue
        start = pos
        n = buf[pos + 1]
        if n < 0x80:
            pos += 2
        else:
            n, pos = varint_at(buf, pos + 1, end)
        rend = pos + n
        if rend > end:
            raise ProtocolError("RecordResult past the end of the Results message")
        if pos < rend and buf[pos] == 0x08:
            rid, p = varint_at(buf, pos + 1, rend)
            if p < rend and buf[p] == 0x10 and buf[p + 1] == 1:
                append_id(rid)
                append_start(start)
                pos = rend
                continue
        got: List[int] = []
        outcome: List[Outcome] = []
        decode_results(buf, start, rend, got, outcome)
        if outcome[0].__class__ is not Result:
            failed.append(len(ids))
        append_id(got[0])
        append_start(start)
        pos = rend


def decode_result_at(buf: bytes, start: int, outcomes: List[Outcome]) -> int:
    """Decode the one RecordResult whose 0x0A tag is at ``start``, appending
    its outcome to ``outcomes``; returns its id."""
    try:
        n, pos = _varint_at(buf, start + 1, len(buf))
        ids: List[int] = []
        decode_results(buf, start, pos + n, ids, outcomes)
    except (IndexError, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed RecordResult from the daemon: {e}") from e
    return ids[0]


# Kinds of server messages.
HELLO = 1
RESULTS = 2
FLUSHED = 3
ERROR = 4
STATS = 5
ACCEPTED = 6


def decode_server_message(buf: bytes, pos: int, end: int) -> Tuple[int, Any]:
    """Decode the ServerMessage in ``buf[pos:end]``.

    Returns ``(kind, payload)``: ``(RESULTS, (ids, outcomes))``,
    ``(FLUSHED, id)``, ``(HELLO, ServerInfo)``, ``(ERROR, dict with code,
    message, fatal)``, ``(STATS, (id, json))``, ``(ACCEPTED, (first_ids,
    counts))`` (the runs of accepted record ids), or ``(0, None)`` for a message
    of a kind this client does not know (skipped, for forward compatibility).
    """
    try:
        return _decode_server_message(buf, pos, end)
    except (IndexError, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed ServerMessage from the daemon: {e}") from e


def _decode_server_message(buf: bytes, pos: int, end: int) -> Tuple[int, Any]:
    kind: int = 0
    payload: Any = None
    while pos < end:
        key, pos = _decode_varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type != 2 or not 1 <= number <= 6:
            pos = _schema.skip_field(buf, pos, end, wire_type)
            continue
        n, pos = _decode_varint(buf, pos, end)
        stop = pos + n
        if stop > end:
            raise ProtocolError("ServerMessage: field past the end of the frame")
        if number == RESULTS:
            ids: List[int] = []
            outcomes: List[Outcome] = []
            decode_results(buf, pos, stop, ids, outcomes)
            kind, payload = RESULTS, (ids, outcomes)
        elif number == FLUSHED:
            kind, payload = FLUSHED, _schema.decode("FlushReply", buf, pos, stop).get("id", 0)
        elif number == HELLO:
            m = _schema.decode("HelloReply", buf, pos, stop)
            kind, payload = (
                HELLO,
                ServerInfo(
                    m.get("protocol_version", 0),
                    m.get("server_version", ""),
                    m.get("max_frame_size", 0),
                    m.get("max_record_size", 0),
                ),
            )
        elif number == ERROR:
            m = _schema.decode("Error", buf, pos, stop)
            kind, payload = (
                ERROR,
                {
                    "code": m.get("code", ""),
                    "message": m.get("message", ""),
                    "fatal": m.get("fatal", False),
                },
            )
        elif number == ACCEPTED:
            m = _schema.decode("Accepted", buf, pos, stop)
            firsts, counts = m.get("first_ids", []), m.get("counts", [])
            if len(firsts) != len(counts):
                raise ProtocolError(f"Accepted: {len(firsts)} first_ids but {len(counts)} counts")
            kind, payload = ACCEPTED, (firsts, counts)
        else:
            m = _schema.decode("StatsReply", buf, pos, stop)
            kind, payload = STATS, (m.get("id", 0), m.get("json", ""))
        pos = stop
    return kind, payload


class FrameReader:
    """Cuts a byte stream into frame bodies.

    ``feed(chunk)`` returns ``(buf, [(start, end), ...])``: the bodies of the
    complete frames received so far as offsets into ``buf`` (no copy per
    frame). An incomplete frame is kept as a list of chunks and joined once
    it is complete, so a large frame arriving in many pieces costs one copy.
    """

    __slots__ = ("_chunks", "_have", "_need", "max_frame_size")

    def __init__(self, max_frame_size: int = 1 << 30) -> None:
        self._chunks: List[bytes] = []
        self._have = 0  # bytes held in _chunks
        self._need = PREFIX_SIZE  # bytes needed before anything can be cut
        self.max_frame_size = max_frame_size

    def feed(self, chunk: bytes) -> Tuple[bytes, List[Tuple[int, int]]]:
        if self._chunks:
            self._chunks.append(chunk)
            self._have += len(chunk)
            if self._have < self._need:
                return b"", []
            buf = b"".join(self._chunks)
        else:
            buf = chunk
        spans: List[Tuple[int, int]] = []
        pos = 0
        n = len(buf)
        need = PREFIX_SIZE
        while n - pos >= PREFIX_SIZE:
            length = int.from_bytes(buf[pos : pos + PREFIX_SIZE], "big")
            if length > self.max_frame_size:
                raise ProtocolError(
                    f"the daemon sent a frame of {length} bytes, over this client's limit of {self.max_frame_size}"
                )
            if n - pos - PREFIX_SIZE < length:
                need = PREFIX_SIZE + length
                break
            spans.append((pos + PREFIX_SIZE, pos + PREFIX_SIZE + length))
            pos += PREFIX_SIZE + length
        if pos < n:
            rest = buf[pos:]
            self._chunks = [rest]
            self._have = len(rest)
        else:
            self._chunks = []
            self._have = 0
        self._need = need
        return buf, spans

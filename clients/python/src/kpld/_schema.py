"""The socket protocol's messages as data, and a generic protobuf codec over them.

``MESSAGES`` mirrors ``proto/kpld.proto`` (package ``kpld.v1``) field by field;
``tests/test_schema.py`` checks it against the .proto file so the two cannot
drift. :func:`encode` writes canonical proto3 (fields in field-number order,
implicit-presence fields omitted when they hold their default, ``optional``
fields emitted whenever set, oneof members emitted whenever set) and
:func:`decode` reads any valid encoding (unknown fields skipped).

Messages are plain dicts keyed by the .proto field names, holding ``int``
(also for enums),
``bool``, ``str``, ``bytes``, dicts and lists. :func:`to_json` /
:func:`from_json` convert them to and from the proto3 JSON mapping with the
original field names (``uint64`` as decimal strings, ``bytes`` as base64,
enums by value name),
which is what ``tests/golden/frames.json`` holds.

This module is the reference, not the hot path: ``_codec`` encodes
``PutRequest`` and decodes ``Results`` by hand, and the tests hold the two to
the same bytes.
"""

from __future__ import annotations

import base64
from typing import Any, Dict, List, NamedTuple, Tuple

from .errors import ProtocolError

# Field kinds.
UINT32 = "uint32"
UINT64 = "uint64"
BOOL = "bool"
STRING = "string"
BYTES = "bytes"
MESSAGE = "message"
ENUM = "enum"

# Field labels.
SINGULAR = "singular"  # proto3 implicit presence
OPTIONAL = "optional"  # proto3 `optional`: explicit presence
REPEATED = "repeated"
ONEOF = "oneof"  # member of the message's single oneof `msg`

_WIRE_VARINT = 0
_WIRE_I64 = 1
_WIRE_LEN = 2
_WIRE_I32 = 5


class Field(NamedTuple):
    number: int
    name: str
    kind: str
    label: str = SINGULAR
    message: str = ""  # the message or enum type, for kinds MESSAGE and ENUM


def _m(*fields: Field) -> Tuple[Field, ...]:
    return tuple(sorted(fields, key=lambda f: f.number))


#: Every message of proto/kpld.proto, by name.
MESSAGES: Dict[str, Tuple[Field, ...]] = {
    "ClientMessage": _m(
        Field(1, "hello", MESSAGE, ONEOF, "Hello"),
        Field(2, "put", MESSAGE, ONEOF, "PutRequest"),
        Field(3, "flush", MESSAGE, ONEOF, "FlushRequest"),
        Field(4, "stats", MESSAGE, ONEOF, "StatsRequest"),
    ),
    "Hello": _m(
        Field(1, "protocol_version", UINT32),
        Field(2, "client_name", STRING),
        Field(3, "want_accepted", BOOL),
    ),
    "PutRequest": _m(
        Field(1, "records", MESSAGE, REPEATED, "Record"),
        Field(2, "busy_if_full", BOOL),
    ),
    "Record": _m(
        Field(1, "id", UINT64),
        # UTF-8 text, declared `bytes` in the .proto so invalid UTF-8 fails one
        # record instead of the frame; same wire encoding as `string`.
        Field(2, "stream", BYTES),
        Field(3, "partition_key", BYTES),
        Field(4, "explicit_hash_key", BYTES, OPTIONAL),
        Field(5, "data", BYTES),
        Field(6, "compression", ENUM, SINGULAR, "Compression"),
    ),
    "FlushRequest": _m(Field(1, "id", UINT64)),
    "StatsRequest": _m(Field(1, "id", UINT64)),
    "ServerMessage": _m(
        Field(1, "hello", MESSAGE, ONEOF, "HelloReply"),
        Field(2, "results", MESSAGE, ONEOF, "Results"),
        Field(3, "flushed", MESSAGE, ONEOF, "FlushReply"),
        Field(4, "error", MESSAGE, ONEOF, "Error"),
        Field(5, "stats", MESSAGE, ONEOF, "StatsReply"),
        Field(6, "accepted", MESSAGE, ONEOF, "Accepted"),
    ),
    "HelloReply": _m(
        Field(1, "protocol_version", UINT32),
        Field(2, "server_version", STRING),
        Field(3, "max_frame_size", UINT64),
        Field(4, "max_record_size", UINT64),
    ),
    "Results": _m(Field(1, "results", MESSAGE, REPEATED, "RecordResult")),
    "RecordResult": _m(
        Field(1, "id", UINT64),
        Field(2, "success", BOOL),
        Field(3, "shard_id", STRING),
        Field(4, "sequence_number", STRING),
        Field(5, "sub_sequence_number", UINT64),
        Field(6, "attempts", MESSAGE, REPEATED, "Attempt"),
        Field(7, "error_code", STRING),
        Field(8, "error_message", STRING),
        Field(9, "refused", BOOL),
    ),
    "Attempt": _m(
        Field(1, "success", BOOL),
        Field(2, "error_code", STRING),
        Field(3, "error_message", STRING),
        Field(4, "delay_ms", UINT64),
        Field(5, "duration_ms", UINT64),
    ),
    "Accepted": _m(
        Field(1, "first_ids", UINT64, REPEATED),
        Field(2, "counts", UINT64, REPEATED),
    ),
    "FlushReply": _m(Field(1, "id", UINT64)),
    "Error": _m(
        Field(1, "code", STRING),
        Field(2, "message", STRING),
        Field(3, "fatal", BOOL),
    ),
    "StatsReply": _m(
        Field(1, "id", UINT64),
        Field(2, "json", STRING),
    ),
}

#: Every enum of proto/kpld.proto: name -> {number: value name}.
ENUMS: Dict[str, Dict[int, str]] = {
    "Compression": {
        0: "COMPRESSION_DEFAULT",
        1: "COMPRESSION_NONE",
        2: "COMPRESSION_GZIP",
        3: "COMPRESSION_ZLIB",
    },
}

_BY_NUMBER: Dict[str, Dict[int, Field]] = {name: {f.number: f for f in fields} for name, fields in MESSAGES.items()}

#: Kinds of repeated fields that proto3 encodes packed.
_PACKABLE = {UINT32, UINT64, BOOL, ENUM}

_LIMITS = {UINT32: (1 << 32) - 1, UINT64: (1 << 64) - 1}


# --------------------------------------------------------------------------
# varints


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 of ``value`` (0 <= value < 2**64)."""
    if value < 0 or value >> 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes, pos: int, end: int) -> Tuple[int, int]:
    """The varint at ``buf[pos:end]`` and the position after it.

    Raises ProtocolError when it is truncated or longer than 10 bytes."""
    result = 0
    shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result >> 64:
                raise ProtocolError("varint exceeds 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtocolError("varint longer than 10 bytes")
    raise ProtocolError("truncated varint")


def _tag(number: int, wire_type: int) -> bytes:
    return encode_varint((number << 3) | wire_type)


# --------------------------------------------------------------------------
# generic encode / decode


def _is_default(field: Field, value: Any) -> bool:
    if field.kind == MESSAGE:
        return False
    return not value  # 0, False, "", b""


def encode(message_type: str, msg: Dict[str, Any]) -> bytes:
    """Canonical proto3 encoding of ``msg`` (a dict) as ``message_type``."""
    fields = MESSAGES[message_type]
    unknown = set(msg) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"{message_type} has no field(s) {sorted(unknown)}")
    if sum(1 for f in fields if f.label == ONEOF and msg.get(f.name) is not None) > 1:
        raise ValueError(f"{message_type}: more than one oneof member set")
    out = bytearray()
    for f in fields:
        value = msg.get(f.name)
        if value is None:
            continue
        if f.label == REPEATED and f.kind in _PACKABLE:
            if value:  # proto3 packs repeated scalars: one LEN field of varints
                packed = b"".join(_encode_value(f, item)[len(_tag(f.number, _WIRE_VARINT)) :] for item in value)
                out += _tag(f.number, _WIRE_LEN) + encode_varint(len(packed)) + packed
        elif f.label == REPEATED:
            for item in value:
                out += _encode_value(f, item)
        elif f.label in (OPTIONAL, ONEOF) or not _is_default(f, value):
            out += _encode_value(f, value)
    return bytes(out)


def _encode_value(f: Field, value: Any) -> bytes:
    if f.kind in (UINT32, UINT64, BOOL, ENUM):
        if f.kind == ENUM:
            if not isinstance(value, int) or isinstance(value, bool) or value not in ENUMS[f.message]:
                raise ValueError(f"{f.name}: {value!r} is not a {f.message} value")
            return _tag(f.number, _WIRE_VARINT) + encode_varint(value)
        if f.kind == BOOL:
            if not isinstance(value, bool):
                raise TypeError(f"{f.name}: expected bool, got {type(value).__name__}")
            value = int(value)
        elif not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{f.name}: expected int, got {type(value).__name__}")
        elif not 0 <= value <= _LIMITS[f.kind]:
            raise ValueError(f"{f.name}: {value} out of range for {f.kind}")
        return _tag(f.number, _WIRE_VARINT) + encode_varint(value)
    payload: bytes
    if f.kind == STRING:
        payload = value.encode("utf-8")
    elif f.kind == BYTES:
        payload = bytes(value)
    else:
        payload = encode(f.message, value)
    return _tag(f.number, _WIRE_LEN) + encode_varint(len(payload)) + payload


def skip_field(buf: bytes, pos: int, end: int, wire_type: int) -> int:
    """Position after a field's value of ``wire_type`` starting at ``pos``."""
    if wire_type == _WIRE_VARINT:
        return decode_varint(buf, pos, end)[1]
    if wire_type == _WIRE_I64:
        pos += 8
    elif wire_type == _WIRE_I32:
        pos += 4
    elif wire_type == _WIRE_LEN:
        length, pos = decode_varint(buf, pos, end)
        pos += length
    else:
        raise ProtocolError(f"unsupported wire type {wire_type}")
    if pos > end:
        raise ProtocolError("truncated field")
    return pos


def _scalar(f: Field, value: int) -> Any:
    """A varint's value as field ``f`` holds it."""
    if f.kind == BOOL:
        return bool(value)
    if f.kind == UINT32:
        return value & 0xFFFFFFFF
    if f.kind == ENUM:
        value &= 0xFFFFFFFF
        if value >= 1 << 31:  # int32 on the wire
            value -= 1 << 32
    return value


def decode(message_type: str, buf: bytes, pos: int = 0, end: int = -1) -> Dict[str, Any]:
    """Decode ``buf[pos:end]`` as ``message_type`` into a dict.

    Implicit-presence fields holding their default value are left out (as
    in the JSON mapping), so a message decodes to the same dict however
    it was encoded. Unknown fields are skipped."""
    if end < 0:
        end = len(buf)
    by_number = _BY_NUMBER[message_type]
    msg: Dict[str, Any] = {}
    while pos < end:
        key, pos = decode_varint(buf, pos, end)
        number, wire_type = key >> 3, key & 7
        f = by_number.get(number)
        if f is None:
            pos = skip_field(buf, pos, end, wire_type)
            continue
        expected = _WIRE_VARINT if f.kind in (UINT32, UINT64, BOOL, ENUM) else _WIRE_LEN
        if f.label == REPEATED and f.kind in _PACKABLE and wire_type == _WIRE_LEN:
            # packed (what proto3 writes); parsers must also take it unpacked
            length, pos = decode_varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise ProtocolError(f"{message_type}.{f.name}: length past the end")
            items = msg.setdefault(f.name, [])
            while pos < stop:
                v, pos = decode_varint(buf, pos, stop)
                items.append(_scalar(f, v))
            continue
        if wire_type != expected:
            raise ProtocolError(f"{message_type}.{f.name}: wire type {wire_type}, expected {expected}")
        value: Any
        if expected == _WIRE_VARINT:
            value, pos = decode_varint(buf, pos, end)
            value = _scalar(f, value)
        else:
            length, pos = decode_varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise ProtocolError(f"{message_type}.{f.name}: length past the end")
            if f.kind == STRING:
                try:
                    value = bytes(buf[pos:stop]).decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ProtocolError(f"{message_type}.{f.name}: invalid UTF-8") from e
            elif f.kind == BYTES:
                value = bytes(buf[pos:stop])
            else:
                value = decode(f.message, buf, pos, stop)
            pos = stop
        if f.label == REPEATED:
            msg.setdefault(f.name, []).append(value)
        else:
            if f.label == ONEOF:  # the last member seen wins
                for other in MESSAGES[message_type]:
                    if other.label == ONEOF:
                        msg.pop(other.name, None)
            msg[f.name] = value
    for f in MESSAGES[message_type]:
        if f.label == SINGULAR and f.name in msg and _is_default(f, msg[f.name]):
            del msg[f.name]
    return msg


# --------------------------------------------------------------------------
# proto3 JSON mapping (original field names)


def to_json(message_type: str, msg: Dict[str, Any]) -> Dict[str, Any]:
    """``msg`` in the proto3 JSON mapping: uint64 as strings, bytes as base64."""
    out: Dict[str, Any] = {}
    by_name = {f.name: f for f in MESSAGES[message_type]}
    for name, value in msg.items():
        f = by_name[name]
        if f.label == REPEATED:
            out[name] = [_value_to_json(f, v) for v in value]
        else:
            out[name] = _value_to_json(f, value)
    return out


def _value_to_json(f: Field, value: Any) -> Any:
    if f.kind == ENUM:
        return ENUMS[f.message].get(value, value)  # unknown values stay numbers
    if f.kind == UINT64:
        return str(value)
    if f.kind == BYTES:
        return base64.b64encode(value).decode("ascii")
    if f.kind == MESSAGE:
        return to_json(f.message, value)
    return value


def from_json(message_type: str, obj: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`to_json`."""
    out: Dict[str, Any] = {}
    by_name = {f.name: f for f in MESSAGES[message_type]}
    for name, value in obj.items():
        if name not in by_name:
            raise ValueError(f"{message_type} has no field {name!r}")
        f = by_name[name]
        if f.label == REPEATED:
            out[name] = [_value_from_json(f, v) for v in value]
        else:
            out[name] = _value_from_json(f, value)
    return out


def _value_from_json(f: Field, value: Any) -> Any:
    if f.kind == ENUM:
        if isinstance(value, str):
            by_name = {v: k for k, v in ENUMS[f.message].items()}
            return by_name[value]
        return value
    if f.kind == UINT64:
        return int(value)
    if f.kind == BYTES:
        return base64.b64decode(value, validate=True)
    if f.kind == MESSAGE:
        return from_json(f.message, value)
    return value


def field_names(message_type: str) -> List[str]:
    return [f.name for f in MESSAGES[message_type]]

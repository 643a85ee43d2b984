"""kpld._schema.MESSAGES must say exactly what proto/kpld.proto says."""

from __future__ import annotations

import re

import pytest

from kpld import _schema
from _paths import PROTO_FILE

_SCALARS = {"uint32", "uint64", "bool", "string", "bytes"}


def _parse_enums(text):
    """{enum: {number: value name}} from the .proto text."""
    text = re.sub(r"//[^\n]*", "", text)
    enums = {}
    for e in re.finditer(r"\benum\s+(\w+)\s*\{([^}]*)\}", text):
        enums[e.group(1)] = {int(v.group(2)): v.group(1) for v in re.finditer(r"(\w+)\s*=\s*(\d+)\s*;", e.group(2))}
    return enums


def _parse_proto(text):
    """{message: {(number, name, kind, label, message_type)}} from the .proto text
    (enough of proto3 for this file: messages, enums, scalar/message/enum
    fields, `optional`, `repeated`, one oneof per message)."""
    enums = _parse_enums(text)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"\benum\s+\w+\s*\{[^}]*\}", "", text)
    messages = {}
    for m in re.finditer(r"\bmessage\s+(\w+)\s*\{", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[m.end() : i - 1]
        fields = set()
        oneof_spans = [(o.start(), o.end()) for o in re.finditer(r"\boneof\s+\w+\s*\{[^}]*\}", body)]
        for f in re.finditer(r"(?:(optional|repeated)\s+)?([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", body):
            in_oneof = any(a <= f.start() < b for a, b in oneof_spans)
            label = "oneof" if in_oneof else (f.group(1) or "singular")
            ftype = f.group(2)
            kind = ftype if ftype in _SCALARS else ("enum" if ftype in enums else "message")
            fields.add((int(f.group(4)), f.group(3), kind, label, "" if kind in _SCALARS else ftype))
        messages[m.group(1)] = fields
    return messages


def test_schema_matches_the_proto_file():
    if not PROTO_FILE.is_file():
        pytest.skip(f"{PROTO_FILE} not found (tests run outside the repository)")
    from_proto = _parse_proto(PROTO_FILE.read_text(encoding="utf-8"))
    from_schema = {
        name: {(f.number, f.name, f.kind, f.label, f.message) for f in fields}
        for name, fields in _schema.MESSAGES.items()
    }
    assert from_schema == from_proto


def test_enums_match_the_proto_file():
    if not PROTO_FILE.is_file():
        pytest.skip(f"{PROTO_FILE} not found (tests run outside the repository)")
    assert _schema.ENUMS == _parse_enums(PROTO_FILE.read_text(encoding="utf-8"))


def test_compression_enum_of_the_public_api_matches_the_schema():
    from kpld import Compression

    assert {int(c): f"COMPRESSION_{c.name}" for c in Compression} == _schema.ENUMS["Compression"]


def test_proto_declares_package_and_syntax():
    if not PROTO_FILE.is_file():
        pytest.skip(f"{PROTO_FILE} not found")
    text = PROTO_FILE.read_text(encoding="utf-8")
    assert re.search(r'syntax\s*=\s*"proto3"', text)
    assert re.search(r"package\s+kpld\.v1\s*;", text)

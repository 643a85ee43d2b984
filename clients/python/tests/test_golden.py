"""The golden frames in tests/golden/ (shared with the Rust tests and the Node
client): this client's codecs must reproduce and parse them byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kpld import Attempt, RecordFailed, Result, ServerInfo
from kpld import _codec, _schema
from _paths import CLIENT_DIR, GOLDEN_DIR

EXPECTED_FILES = {
    "hello_request.bin",
    "hello_request_accepted.bin",
    "hello_reply.bin",
    "put_request.bin",
    "put_request_busy.bin",
    "results_success.bin",
    "results_failure.bin",
    "flush_request.bin",
    "flush_reply.bin",
    "error_fatal.bin",
    "accepted.bin",
    "results_refused.bin",
}


def _frames():
    with open(GOLDEN_DIR / "frames.json", encoding="utf-8") as f:
        return json.load(f)["frames"]


def _bytes(name):
    return (GOLDEN_DIR / name).read_bytes()


def _message(name):
    spec = _frames()[name]
    return spec["type"], _schema.from_json(spec["type"], spec["message"])


def test_frames_json_describes_every_golden_file():
    assert set(_frames()) == EXPECTED_FILES
    assert {p.name for p in GOLDEN_DIR.glob("*.bin")} == EXPECTED_FILES


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_length_prefix_is_the_body_length(name):
    raw = _bytes(name)
    assert int.from_bytes(raw[:4], "big") == len(raw) - 4


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_reference_codec_reproduces_and_parses_golden_frame(name):
    mtype, msg = _message(name)
    raw = _bytes(name)
    assert _codec.frame(_schema.encode(mtype, msg)) == raw
    assert _schema.decode(mtype, raw, 4) == msg
    assert _schema.to_json(mtype, _schema.decode(mtype, raw, 4)) == _frames()[name]["message"]


def _put_inputs(msg):
    put = msg["put"]
    streams = {r["stream"] for r in put["records"]}
    assert len(streams) == 1
    inputs = []
    for r in put["records"]:
        item = (r["partition_key"].decode("utf-8"), r.get("data", b""))
        if "explicit_hash_key" in r or "compression" in r:
            ehk = r.get("explicit_hash_key")
            item += (ehk.decode("utf-8") if ehk is not None else None,)
        if "compression" in r:
            item += (r["compression"],)
        inputs.append(item)
    ids = [r["id"] for r in put["records"]]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    return streams.pop().decode("utf-8"), inputs, ids[0], put.get("busy_if_full", False)


@pytest.mark.parametrize("name", ["put_request.bin", "put_request_busy.bin"])
def test_fast_put_encoder_reproduces_golden_frame(name):
    _, msg = _message(name)
    stream, inputs, first, busy = _put_inputs(msg)
    batch = _codec.encode_put_frames(first, stream, inputs, busy_if_full=busy)
    assert batch.frames == [_bytes(name)]


def test_fast_encoders_reproduce_hello_and_flush():
    _, hello = _message("hello_request.bin")
    assert _codec.encode_hello(hello["hello"]["client_name"], want_accepted=False) == _bytes("hello_request.bin")
    _, hello = _message("hello_request_accepted.bin")
    assert hello["hello"]["want_accepted"] is True
    assert _codec.encode_hello(hello["hello"]["client_name"]) == _bytes("hello_request_accepted.bin")
    _, flush = _message("flush_request.bin")
    assert _codec.encode_flush(flush["flush"]["id"]) == _bytes("flush_request.bin")


def _outcome_of(r):
    attempts = [
        Attempt(
            a.get("success", False),
            a.get("error_code", ""),
            a.get("error_message", ""),
            a.get("delay_ms", 0),
            a.get("duration_ms", 0),
        )
        for a in r.get("attempts", [])
    ]
    if r.get("success"):
        return Result(r["shard_id"], r["sequence_number"], r.get("sub_sequence_number", 0), attempts)
    return (r["error_code"], r.get("error_message", ""), attempts)


@pytest.mark.parametrize("name", ["results_success.bin", "results_failure.bin", "results_refused.bin"])
def test_fast_results_decoder_parses_golden_frame(name):
    raw = _bytes(name)
    _, msg = _message(name)
    kind, (ids, outcomes) = _codec.decode_server_message(raw, 4, len(raw))
    assert kind == _codec.RESULTS
    expected = msg["results"]["results"]
    assert ids == [r["id"] for r in expected]
    for r, o in zip(expected, outcomes):
        want = _outcome_of(r)
        if isinstance(want, Result):
            assert o == want
        else:
            assert isinstance(o, RecordFailed)
            assert (o.code, o.message, o.attempts) == want


def test_golden_failure_has_one_record_with_two_attempts():
    raw = _bytes("results_failure.bin")
    _, (ids, outcomes) = _codec.decode_server_message(raw, 4, len(raw))
    assert len(outcomes) == 1 and len(outcomes[0].attempts) == 2


def test_fast_decoder_parses_golden_control_frames():
    def dec(name):
        raw = _bytes(name)
        return _codec.decode_server_message(raw, 4, len(raw))

    h = _message("hello_reply.bin")[1]["hello"]
    assert dec("hello_reply.bin") == (
        _codec.HELLO,
        ServerInfo(h["protocol_version"], h["server_version"], h["max_frame_size"], h["max_record_size"]),
    )
    assert dec("flush_reply.bin") == (_codec.FLUSHED, _message("flush_reply.bin")[1]["flushed"]["id"])
    a = _message("accepted.bin")[1]["accepted"]
    assert dec("accepted.bin") == (_codec.ACCEPTED, (a["first_ids"], a["counts"]))
    assert a["first_ids"][1] > 1 << 53
    kind, (ids, outcomes) = dec("results_refused.bin")
    assert (kind, ids, outcomes[0].code, outcomes[0].refused) == (_codec.RESULTS, [7], "InvalidPartitionKey", True)
    e = _message("error_fatal.bin")[1]["error"]
    assert dec("error_fatal.bin") == (_codec.ERROR, {"code": e["code"], "message": e["message"], "fatal": True})


def test_generator_output_matches_the_committed_files():
    proc = subprocess.run(
        [sys.executable, str(CLIENT_DIR / "tools" / "make_golden.py"), "--check", "--dir", str(GOLDEN_DIR)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


# -- cross-check with the official protobuf runtime ------------------------------------


def _official_classes():
    """Message classes built by the official protobuf runtime from the schema
    (which test_schema.py holds to proto/kpld.proto)."""
    pytest.importorskip("google.protobuf", reason="the protobuf package is not installed")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    T = descriptor_pb2.FieldDescriptorProto
    kinds = {
        _schema.UINT32: T.TYPE_UINT32,
        _schema.UINT64: T.TYPE_UINT64,
        _schema.BOOL: T.TYPE_BOOL,
        _schema.STRING: T.TYPE_STRING,
        _schema.BYTES: T.TYPE_BYTES,
        _schema.MESSAGE: T.TYPE_MESSAGE,
        _schema.ENUM: T.TYPE_ENUM,
    }
    fdp = descriptor_pb2.FileDescriptorProto(name="kpld_golden_check.proto", package="kpld.v1", syntax="proto3")
    for name, values in _schema.ENUMS.items():
        e = fdp.enum_type.add(name=name)
        for number, value_name in sorted(values.items()):
            e.value.add(name=value_name, number=number)
    for name, fields in _schema.MESSAGES.items():
        m = fdp.message_type.add(name=name)
        if any(f.label == _schema.ONEOF for f in fields):
            m.oneof_decl.add(name="msg")
        for f in fields:
            fd = m.field.add(name=f.name, number=f.number, type=kinds[f.kind])
            fd.label = T.LABEL_REPEATED if f.label == _schema.REPEATED else T.LABEL_OPTIONAL
            if f.kind in (_schema.MESSAGE, _schema.ENUM):
                fd.type_name = f".kpld.v1.{f.message}"
            if f.label == _schema.ONEOF:
                fd.oneof_index = 0
        for f in fields:  # proto3 `optional`: a synthetic oneof after the real ones
            if f.label == _schema.OPTIONAL:
                m.oneof_decl.add(name=f"_{f.name}")
                fd = next(x for x in m.field if x.name == f.name)
                fd.proto3_optional = True
                fd.oneof_index = len(m.oneof_decl) - 1
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"kpld.v1.{name}"))
        for name in ("ClientMessage", "ServerMessage")
    }


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_official_protobuf_runtime_agrees_with_golden_frame(name):
    from google.protobuf import json_format

    classes = _official_classes()
    spec = _frames()[name]
    raw = _bytes(name)
    cls = classes[spec["type"]]
    parsed = cls()
    parsed.ParseFromString(raw[4:])
    assert json_format.MessageToDict(parsed, preserving_proto_field_name=True) == spec["message"]
    built = json_format.ParseDict(spec["message"], cls())
    assert built.SerializeToString(deterministic=True) == raw[4:]

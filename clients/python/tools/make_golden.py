#!/usr/bin/env python3
"""Write the golden protocol frames in tests/golden/ (repository root).

Each ``NAME.bin`` is one frame exactly as it travels on the socket: the
4-byte big-endian length prefix, then a canonical proto3 encoding of a
``ClientMessage`` or ``ServerMessage`` (fields in field-number order,
default-valued implicit fields omitted, ``optional`` fields emitted when
set). ``frames.json`` describes every file's message in the proto3 JSON
mapping with the .proto's field names (uint64 as decimal strings, bytes as
base64, enums by value name), so the Rust tests and the Node client can check their codecs
against the same bytes.

Usage::

    python clients/python/tools/make_golden.py            # (re)write the files
    python clients/python/tools/make_golden.py --check    # exit 1 if they differ

The encoding is this package's reference codec (kpld._schema); the test
clients/python/tests/test_golden.py also holds the hand-written fast paths
(kpld._codec) to these bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from kpld import _codec, _schema  # noqa: E402

GOLDEN_DIR = HERE.parent.parent.parent / "tests" / "golden"

_SEQ_1 = "49546986683135544286507457936321625675700192471156785154"
_SEQ_2 = "49546986683135544286507457936321625675700192471156785170"

#: (file name, message type, message as a dict of Python values), in file order.
FRAMES: List[Tuple[str, str, Dict[str, Any]]] = [
    (
        "hello_request.bin",
        "ClientMessage",
        {"hello": {"protocol_version": 1, "client_name": "kpld-python/0.1.0"}},
    ),
    (
        # The Hello this client sends: asking for Accepted messages.
        "hello_request_accepted.bin",
        "ClientMessage",
        {"hello": {"protocol_version": 1, "client_name": "kpld-python/0.1.0", "want_accepted": True}},
    ),
    (
        "hello_reply.bin",
        "ServerMessage",
        {
            "hello": {
                "protocol_version": 1,
                "server_version": "kpld 0.1.0",
                "max_frame_size": 16 * 1024 * 1024,
                "max_record_size": 1024 * 1024,
            }
        },
    ),
    (
        # Two records; the second has an explicit hash key (2**127) and data
        # holding every byte value 0..255.
        "put_request.bin",
        "ClientMessage",
        {
            "put": {
                "records": [
                    {
                        "id": 1,
                        "stream": b"test-stream",
                        "partition_key": b"pk-1",
                        "data": b"\x00\x01\x02\xfe\xffhello",
                    },
                    {
                        "id": 2,
                        "stream": b"test-stream",
                        "partition_key": b"pk-2",
                        "explicit_hash_key": b"170141183460469231731687303715884105728",
                        "data": bytes(range(256)),
                    },
                ]
            }
        },
    ),
    (
        # busy_if_full set, a partition key of multi-byte UTF-8 characters,
        # empty data (omitted on the wire), a two-byte varint id, and a
        # per-record compression (an enum: its value name in frames.json).
        "put_request_busy.bin",
        "ClientMessage",
        {
            "put": {
                "records": [
                    {
                        "id": 300,
                        "stream": b"test-stream",
                        "partition_key": "ключ-\U0001f511".encode("utf-8"),
                        "compression": 2,
                    },
                ],
                "busy_if_full": True,
            }
        },
    ),
    (
        # Two successes; the second has the largest id (a 10-byte varint) and
        # a non-zero sub-sequence number.
        "results_success.bin",
        "ServerMessage",
        {
            "results": {
                "results": [
                    {
                        "id": 1,
                        "success": True,
                        "shard_id": "shardId-000000000000",
                        "sequence_number": _SEQ_1,
                        "attempts": [{"success": True, "delay_ms": 102, "duration_ms": 37}],
                    },
                    {
                        "id": (1 << 64) - 1,
                        "success": True,
                        "shard_id": "shardId-000000000001",
                        "sequence_number": _SEQ_2,
                        "sub_sequence_number": 3,
                        "attempts": [{"success": True, "delay_ms": 100, "duration_ms": 200}],
                    },
                ]
            }
        },
    ),
    (
        # One record that failed after two throttled attempts.
        "results_failure.bin",
        "ServerMessage",
        {
            "results": {
                "results": [
                    {
                        "id": 2,
                        "attempts": [
                            {
                                "error_code": "ProvisionedThroughputExceededException",
                                "error_message": "Rate exceeded for shard shardId-000000000001 in stream test-stream.",
                                "delay_ms": 100,
                                "duration_ms": 25,
                            },
                            {
                                "error_code": "ProvisionedThroughputExceededException",
                                "error_message": "Rate exceeded for shard shardId-000000000001 in stream test-stream.",
                                "delay_ms": 250,
                                "duration_ms": 31,
                            },
                        ],
                        "error_code": "ProvisionedThroughputExceededException",
                        "error_message": "Rate exceeded for shard shardId-000000000001 in stream test-stream.",
                    }
                ]
            }
        },
    ),
    (
        # A refused record (never accepted): an empty partition key.
        "results_refused.bin",
        "ServerMessage",
        {
            "results": {
                "results": [
                    {
                        "id": 7,
                        "error_code": "InvalidPartitionKey",
                        "error_message": "the partition key is empty",
                        "refused": True,
                    }
                ]
            }
        },
    ),
    (
        # Two runs of accepted ids: 1..1000, and 2^53+1, 2^53+2 (past what a
        # JSON number or a JavaScript number holds exactly).
        "accepted.bin",
        "ServerMessage",
        {"accepted": {"first_ids": [1, (1 << 53) + 1], "counts": [1000, 2]}},
    ),
    ("flush_request.bin", "ClientMessage", {"flush": {"id": 3}}),
    ("flush_reply.bin", "ServerMessage", {"flushed": {"id": 3}}),
    (
        "error_fatal.bin",
        "ServerMessage",
        {
            "error": {
                "code": "ProtocolVersion",
                "message": "unsupported protocol version 2; this daemon speaks 1",
                "fatal": True,
            }
        },
    ),
]

COMMENT = (
    "Golden frames of the kpld socket protocol (proto/kpld.proto). Each file is one frame: "
    "a 4-byte big-endian length, then the canonical proto3 encoding of `type` "
    "(fields in field-number order; implicit-presence fields omitted when default; "
    "`optional explicit_hash_key` emitted when set). `message` is the proto3 JSON mapping "
    "with the .proto field names: uint64 as decimal strings, bytes as standard base64, enums by value name, "
    "default-valued fields absent. Generated by clients/python/tools/make_golden.py."
)


def build() -> Tuple[Dict[str, bytes], str]:
    """The golden files' bytes and frames.json's text."""
    files: Dict[str, bytes] = {}
    described: Dict[str, Any] = {}
    for name, mtype, msg in FRAMES:
        files[name] = _codec.frame(_schema.encode(mtype, msg))
        described[name] = {"type": mtype, "message": _schema.to_json(mtype, msg)}
    text = json.dumps({"comment": COMMENT, "frames": described}, indent=2, ensure_ascii=False) + "\n"
    return files, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--dir", type=Path, default=GOLDEN_DIR, help=f"output directory (default {GOLDEN_DIR})")
    args = parser.parse_args()
    files, text = build()
    files["frames.json"] = text.encode("utf-8")
    if args.check:
        stale = [n for n, b in files.items() if not (args.dir / n).is_file() or (args.dir / n).read_bytes() != b]
        for n in stale:
            print(f"differs: {args.dir / n}", file=sys.stderr)
        return 1 if stale else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        (args.dir / n).write_bytes(b)
    print(f"wrote {len(files)} files to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

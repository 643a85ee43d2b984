#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/TARGET/), from the golden
frames of tests/golden, the example config systemd/kpld.toml.example and small
hand-built inputs. Standard library only; run again after changing a target's
input format: `python3 scripts/fuzz_seeds.py`.
"""
import hashlib
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
GOLDEN = ROOT / "tests" / "golden"


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def frame(body):
    return struct.pack(">I", len(body)) + body


def hello(version=1, name=b"fuzz-seed"):
    return frame(field(1, 2, field(1, 0, version) + field(2, 2, name)))


def record(rid, stream, pk, data, ehk=None, compression=0):
    r = field(1, 0, rid) + field(2, 2, stream) + field(3, 2, pk)
    if ehk is not None:
        r += field(4, 2, ehk)
    r += field(5, 2, data)
    if compression:
        r += field(6, 0, compression)
    return field(1, 2, r)


def put(records, busy=False):
    body = b"".join(records) + (field(2, 0, 1) if busy else b"")
    return frame(field(2, 2, body))


def flush(fid):
    return frame(field(3, 2, field(1, 0, fid)))


def stats(sid):
    return frame(field(4, 2, field(1, 0, sid)))


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def frames():
    g = {p.stem: p.read_bytes() for p in GOLDEN.glob("*_request*.bin")}
    hi = g["hello_request"]
    write("frames", "golden-hello", hi)
    write("frames", "golden-put", hi + g["put_request"])
    write("frames", "golden-put-busy-flush", hi + g["put_request_busy"] + g["flush_request"])
    write("frames", "golden-put-before-hello", g["put_request"])
    mixed = put(
        [
            record(1, b"s1", b"key-1", b"hello"),
            record(2, b"s1", b"key-2", b"x" * 300, ehk=b"170141183460469231731687303715884105728"),
            record(3, b"z", b"k", b"gzip me " * 40),
            record(4, b"plain", b"\xc3\xa9t\xc3\xa9", b"", compression=1),
            record(5, b"s2", b"k", b"zlib", compression=3),
            record(6, b"s2", b"k", b"unknown compression", compression=9),
            record(7, b"denied", b"k", b"not allowed"),
            record(8, b"s1", b"", b"empty key"),
            record(9, b"s1", b"k", b"big" * 2000),
            record(10, b"s1", b"k", b"bad ehk", ehk=b"-1"),
        ]
    )
    write("frames", "mixed-records", hello() + mixed + flush(1) + stats(2) + flush(3))
    write("frames", "busy", hello() + put([record(i, b"s1", b"k%d" % i, b"d" * 100) for i in range(80)], busy=True))
    write("frames", "hello-twice", hello() + hello() + flush(1))
    write("frames", "wrong-version", hello(version=2))
    write("frames", "too-large", hello() + struct.pack(">I", 1 << 20) + b"\0" * 16)
    write("frames", "cut-frame", hello() + put([record(1, b"s1", b"k", b"d")])[:-2])
    write("frames", "empty-message", hello() + frame(b""))


def configs():
    example = (ROOT / "systemd" / "kpld.toml.example").read_text()
    write("config", "kpld.toml.example", example.encode())
    write(
        "config",
        "streams",
        b'region = "us-east-1"\nstreams_allowed = ["a*", "b?"]\ncompression = "zlib"\n'
        b"compression_level = 9\n[streams.a1]\nmax_record_size = 2048\nrecord_ttl_ms = 500\n"
        b'[streams."b 2"]\naggregation_enabled = false\nrate_limit = 50\nrole_arn = "arn:aws:iam::1:role/r"\n',
    )
    write(
        "config",
        "env-overrides",
        b"max_record_size = 1000\n\0record_ttl_ms=60000\0max_frame_size=2048\0socket_mode=0o600\0"
        b"log_level=debug\0fail_if_throttled=true",
    )
    write("config", "limits", b"max_buffered_bytes = 1152921504606846975\nmax_outstanding_records = 1\n"
          b"retry_backoff_base_ms = 1\nretry_backoff_max_ms = 1\nmax_frame_size = 268435456\n")
    write("config", "metrics", b'metrics_level = "detailed"\nmetrics_granularity = "shard"\n'
          b'metrics_namespace = "N"\nmetrics_prometheus_addr = "127.0.0.1:9000"\nallowed_uids = [0, "root"]\n')


def agg_records(recs):
    """Input of the aggregate target's round-trip mode (first byte even)."""
    out = bytearray([0])
    for pk, ehk, data in recs:
        out += bytes([len(pk)]) + pk
        if ehk is None:
            out.append(0)
        else:
            out += bytes([1, len(ehk)]) + ehk
        out += struct.pack(">H", len(data)) + data
    return bytes(out)


def aggregate(recs):
    pks, ehks, body = [], [], b""
    for pk, ehk, data in recs:
        if pk not in pks:
            pks.append(pk)
        r = field(1, 0, pks.index(pk))
        if ehk is not None:
            if ehk not in ehks:
                ehks.append(ehk)
            r += field(2, 0, ehks.index(ehk))
        body += field(3, 2, r + field(3, 2, data))
    proto = b"".join(field(1, 2, k) for k in pks) + b"".join(field(2, 2, k) for k in ehks) + body
    return b"\xf3\x89\x9a\xc2" + proto + hashlib.md5(proto).digest()


def aggregates():
    recs = [(b"k1", None, b"a"), (b"k2", b"42", b"bb"), (b"k1", b"42", b""), (b"\xc3\xa9", None, bytes(range(256)))]
    write("aggregate", "records", agg_records(recs))
    write("aggregate", "records-one", agg_records([(b"p", None, b"x" * 1000)]))
    write("aggregate", "decode-valid", b"\x01" + aggregate(recs))
    write("aggregate", "decode-one", b"\x01" + aggregate([(b"p", b"340282366920938463463374607431768211455", b"d")]))
    bad = bytearray(aggregate(recs))
    bad[-1] ^= 1
    write("aggregate", "decode-bad-digest", b"\x01" + bytes(bad))


if __name__ == "__main__":
    frames()
    configs()
    aggregates()
    for d in sorted(CORPUS.iterdir()):
        print(f"{d.relative_to(ROOT)}: {len(list(d.iterdir()))} files")

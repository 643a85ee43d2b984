"""Per-stream settings and compression, against real local Kinesis servers: two streams with
different settings in one daemon behave differently, as configured; a stream outside
streams_allowed is refused; a stream table with its own endpoint reaches a second server."""

from __future__ import annotations

import gzip
import zlib

import pytest

from kinesis_helpers import Put, put_all, read_stream, record_error_code


def test_two_streams_in_one_daemon_follow_their_own_settings(kpld, producers, kinesis, make_stream):
    plain = make_stream(kinesis, 2)
    single = make_stream(kinesis, 2)
    logs = make_stream(kinesis, 1)
    d = kpld(
        streams={
            single: {"aggregation_enabled": False},
            logs: {"compression": "gzip", "compression_level": 9},
        }
    )
    p = producers(d)
    n = 60
    puts_plain = put_all(p, plain, [Put(f"plain-{i}".encode(), f"k{i % 7}") for i in range(n)])
    puts_single = put_all(p, single, [Put(f"single-{i}".encode(), f"k{i % 7}") for i in range(n)])
    log_lines = [
        (f'{{"n": {i}, "level": "info", "msg": "user logged in", "path": "/api/v1/login"}}' * 5).encode()
        for i in range(n)
    ]
    puts_logs = put_all(p, logs, [Put(line, f"k{i}") for i, line in enumerate(log_lines)])
    for puts in (puts_plain, puts_single, puts_logs):
        assert all(x.error is None for x in puts), [x.error for x in puts if x.error][:3]

    agg = read_stream(kinesis, plain)
    assert len(agg.user_records) == n
    assert len(agg.kinesis_records) < n, "aggregation on: fewer Kinesis records than user records"

    raw = read_stream(kinesis, single)
    assert len(raw.user_records) == n
    assert len(raw.kinesis_records) == n, "aggregation off: one Kinesis record per user record"
    assert not any(k.aggregated for k in raw.kinesis_records)

    comp = read_stream(kinesis, logs)
    got = sorted(gzip.decompress(u.data) for u in comp.user_records)
    assert got == sorted(log_lines), "the compressed data gunzips to what was put"
    stored = sum(len(u.data) for u in comp.user_records)
    assert stored < sum(len(x) for x in log_lines) / 3, "JSON logs compress well"


def test_ttl_expires_records_of_one_stream_only(kpld, producers, kinesis, make_stream):
    # A 1 ms TTL with a 500 ms buffer time: every record of "doomed" expires before its first
    # attempt could start; the other stream, with the global TTL, is unaffected.
    fast = make_stream(kinesis, 1)
    doomed = make_stream(kinesis, 1)
    d = kpld(
        record_max_buffered_time_ms=200,
        streams={doomed: {"record_ttl_ms": 1, "record_max_buffered_time_ms": 500}},
    )
    p = producers(d)
    ok = put_all(p, fast, [Put(f"fast-{i}".encode(), "k") for i in range(20)])
    # No flush here: a flush would send at once, possibly within the 1 ms.
    futures = [p.put_record(doomed, f"doomed-{i}".encode(), partition_key="k") for i in range(20)]
    codes = []
    for f in futures:
        try:
            f.result(timeout=60)
            codes.append(None)
        except Exception as e:  # noqa: BLE001 - the code is what is checked
            codes.append(record_error_code(e))
    assert all(x.error is None for x in ok)
    assert codes == ["Expired"] * 20, codes
    assert read_stream(kinesis, doomed).user_records == []


def test_compression_asked_per_record_overrides_the_stream(kpld, producers, kinesis, make_stream):
    s = make_stream(kinesis, 1)
    # The stream compresses with gzip: what a record asks for must win over it.
    d = kpld(streams={s: {"compression": "gzip"}})
    p = producers(d)
    data = b"hello hello hello hello hello hello"
    asked_zlib = p.put_record(s, data, partition_key="zlib", compression="zlib")
    asked_none = p.put_record(s, data + b"?", partition_key="none", compression="none")
    stream_default = p.put_record(s, data + b"!", partition_key="default")
    p.flush()
    for f in (asked_zlib, asked_none, stream_default):
        f.result(timeout=60)
    got = {u.partition_key: u.data for u in read_stream(kinesis, s).user_records}
    assert zlib.decompress(got["zlib"]) == data
    assert got["none"] == data + b"?"
    assert gzip.decompress(got["default"]) == data + b"!"


def test_streams_allowed_refuses_other_streams_with_a_clear_error(kpld, producers, kinesis, make_stream):
    s = make_stream(kinesis, 1)
    d = kpld(streams_allowed=[s, "audit-*"])
    p = producers(d)
    ok = p.put_record(s, b"fine", partition_key="k")
    typo = p.put_record(s + "x", b"typo", partition_key="k")
    p.flush()
    ok.result(timeout=60)
    with pytest.raises(Exception) as e:
        typo.result(timeout=60)
    assert record_error_code(e.value) == "StreamNotAllowed"
    assert "streams_allowed" in str(e.value)


def test_a_stream_with_its_own_region_and_endpoint_reaches_a_second_server(
    kpld, producers, kinesis, kinesis_mock_endpoint, make_stream
):
    import boto3

    # kinesis-local keeps streams per region: the stream exists in eu-west-1 only.
    eu = boto3.client(
        "kinesis",
        endpoint_url=kinesis_mock_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    here = make_stream(kinesis, 1)
    there = make_stream(eu, 1)
    d = kpld(
        streams={
            there: {
                "kinesis_endpoint": kinesis_mock_endpoint,
                "region": "eu-west-1",
            }
        }
    )
    p = producers(d)
    a = put_all(p, here, [Put(b"on-kinesalite", "k")])
    b = put_all(p, there, [Put(b"on-kinesis-mock", "k")])
    assert a[0].error is None and b[0].error is None, (a[0].error, b[0].error)
    assert [u.data for u in read_stream(kinesis, here).user_records] == [b"on-kinesalite"]
    assert [u.data for u in read_stream(eu, there).user_records] == [b"on-kinesis-mock"]

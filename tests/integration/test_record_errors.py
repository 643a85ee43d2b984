"""Invalid records fail one by one with the documented error codes, nothing of them reaches
the stream, and the connection that sent them keeps working."""

from __future__ import annotations

import pytest

from kinesis_helpers import (
    MAX_HASH_KEY,
    Put,
    check_delivery,
    collect,
    describe_failures,
    put_all,
    read_stream,
    record_error_code,
    submit,
)

MAX_RECORD_SIZE = 1000


def test_invalid_records_fail_with_documented_codes_and_connection_keeps_working(
    kpld, producers, kinesis, make_stream, kpld_client_module
):
    record_failed = kpld_client_module.RecordFailed
    stream = make_stream(kinesis, 2)
    # Aggregates must fit a record too, so the aggregation limit comes down with it.
    daemon = kpld(max_record_size=MAX_RECORD_SIZE, aggregation_max_size=MAX_RECORD_SIZE)
    producer = producers(daemon)

    bad = [
        ("empty partition key", Put(b"bad-1", ""), "InvalidPartitionKey"),
        ("257-char partition key", Put(b"bad-2", "k" * 257), "InvalidPartitionKey"),
        ("257 two-byte chars", Put(b"bad-3", "\u00e9" * 257), "InvalidPartitionKey"),
        # 200 characters but 400 UTF-16 code units: the server refuses a whole
        # PutRecords call holding it, so kpld must refuse the record alone.
        ("200 chars outside the BMP", Put(b"bad-8", "\U0001F511" * 200), "InvalidPartitionKey"),
        (
            "data + key over max_record_size",
            Put(b"bad-4|" + b"x" * MAX_RECORD_SIZE, "big"),
            "RecordTooLarge",
        ),
        ("explicit hash key 'abc'", Put(b"bad-5", "k5", "abc"), "InvalidExplicitHashKey"),
        ("explicit hash key 2^128", Put(b"bad-6", "k6", str(MAX_HASH_KEY + 1)), "InvalidExplicitHashKey"),
        ("explicit hash key -1", Put(b"bad-7", "k7", "-1"), "InvalidExplicitHashKey"),
    ]
    # Limits are inclusive: these are valid.
    good = [
        Put(b"good-1", "k" * 256),
        Put(b"good-2", "\u00e9" * 256),  # 256 characters, 512 bytes
        Put(b"good-6", "\U0001F511" * 128),  # 128 characters, 256 UTF-16 code units
        Put(b"good-3|" + b"y" * (MAX_RECORD_SIZE - 7 - 3), "max"),  # data + key == limit
        Put(b"good-4", "k8", str(MAX_HASH_KEY)),
        Put(b"good-5", "k9", "0"),
    ]

    # Bad and good records interleaved on one connection.
    order = []
    for i in range(max(len(bad), len(good))):
        if i < len(bad):
            order.append(bad[i][1])
        if i < len(good):
            order.append(good[i])
    put_all(producer, stream, order)

    for what, put, code in bad:
        assert put.error is not None, f"{what}: expected {code}, got success {put.result!r}"
        assert isinstance(put.error, record_failed), f"{what}: {put.error!r}"
        assert record_error_code(put.error) == code, f"{what}: {put.error!r}"
    assert all(p.error is None for p in good), describe_failures(good)

    # Unknown stream: fails with the code Kinesis gives; invalid stream name: refused.
    unknown = Put(b"bad-stream-1", "k")
    invalid_name = Put(b"bad-stream-2", "k")
    futures = [
        submit(producer, "kpld-test-no-such-stream", unknown),
        submit(producer, "not a valid name!", invalid_name),
    ]
    collect([unknown, invalid_name], futures)
    assert isinstance(unknown.error, record_failed), unknown
    assert record_error_code(unknown.error) == "ResourceNotFoundException", unknown.error
    assert isinstance(invalid_name.error, record_failed), invalid_name
    assert record_error_code(invalid_name.error) == "InvalidStreamName", invalid_name.error

    # The same connection still works.
    after = put_all(producer, stream, [Put(f"after-{i}".encode(), f"a{i}") for i in range(50)])
    assert all(p.error is None for p in after), describe_failures(after)

    contents = read_stream(kinesis, stream)
    counts = check_delivery([p for _, p, _ in bad] + good + after, contents)
    assert counts["user_records"] == len(good) + len(after)


@pytest.mark.parametrize("key", ["", "k" * 257])
def test_single_invalid_key_does_not_fail_its_batch(kpld, producers, kinesis, make_stream, key):
    stream = make_stream(kinesis, 1)
    daemon = kpld()
    producer = producers(daemon)

    puts = [Put(f"ok-{i}".encode(), f"ok-{i}") for i in range(20)]
    puts.insert(10, Put(b"the-bad-one", key))
    put_all(producer, stream, puts)

    assert record_error_code(puts[10].error) == "InvalidPartitionKey", puts[10]
    others = puts[:10] + puts[11:]
    assert all(p.error is None for p in others), describe_failures(others)
    check_delivery(puts, read_stream(kinesis, stream))


def test_records_refused_before_a_shard_is_chosen_are_counted_in_stats(
    kpld, kpld_bin, producers, kinesis, make_stream, kpld_client_module
):
    import subprocess
    import time
    import uuid

    record_failed = kpld_client_module.RecordFailed
    live = make_stream(kinesis, 1)
    missing = f"kpld-missing-{uuid.uuid4().hex[:8]}"
    daemon = kpld(streams_allowed=[live, missing])
    producer = producers(daemon)
    refused = [
        producer.put_record(live, b"x", partition_key=""),  # InvalidPartitionKey
        producer.put_record("not allowed", b"x", partition_key="k"),  # InvalidStreamName
        producer.put_record("other-stream", b"x", partition_key="k"),  # StreamNotAllowed
    ]
    gone = [producer.put_record(missing, b"x", partition_key=f"k{i}") for i in range(4)]
    for f in refused + gone:
        with pytest.raises(record_failed):
            f.result(timeout=120)
    # Stats are gathered about once a second: wait for the stream's count.
    deadline = time.monotonic() + 60
    while True:
        s = producer.daemon_stats()
        by_name = {x["name"]: x for x in s["streams"]}
        if missing in by_name and by_name[missing]["user_records_failed_total"] == 4:
            break
        assert time.monotonic() < deadline, s
        time.sleep(0.2)
    assert s["counters"]["user_records_refused"] == 3, s["counters"]
    # The table (redrawn once a second until interrupted) names them in its header.
    table = subprocess.Popen(
        [kpld_bin, "stats", "--socket", daemon.socket_path],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(2)
    table.terminate()
    text = table.communicate(timeout=30)[0].decode()
    assert "refused 3 (invalid records, streams not allowed)" in text, text

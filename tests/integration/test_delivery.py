"""Records put through the real kpld land in a real (kinesalite) stream exactly once, on the
shard kpld predicted and reported, aggregated in the KPL format the real aws-kinesis-agg
deaggregator reads."""

from __future__ import annotations

import os

from kinesis_helpers import (
    MAX_HASH_KEY,
    Put,
    check_delivery,
    collect,
    describe_failures,
    list_shards,
    put_all,
    read_stream,
    submit,
)


def make_puts(n: int, distinct_keys: int, tag: str) -> list[Put]:
    # Unique data per record (it identifies the record when read back), varied sizes.
    return [
        Put(
            data=f"{tag}-{i:06d}|".encode() + os.urandom(i % 97),
            partition_key=f"key-{i % distinct_keys}",
        )
        for i in range(n)
    ]


def test_round_trip_every_record_arrives_once_on_its_predicted_shard(
    kpld, producers, kinesis, make_stream
):
    stream = make_stream(kinesis, 4)
    daemon = kpld()
    producer = producers(daemon)

    puts = put_all(producer, stream, make_puts(2000, 200, "rt"))

    assert all(p.error is None for p in puts), describe_failures(puts)
    contents = read_stream(kinesis, stream)
    counts = check_delivery(puts, contents)
    assert counts["user_records"] == 2000
    assert counts["duplicates"] == 0
    assert len({p.result.shard_id for p in puts}) == 4, "200 keys should cover all 4 shards"
    # Aggregation really happened.
    assert counts["kinesis_records"] < 2000, counts
    assert any(k.aggregated and len(k.user_records) > 1 for k in contents.kinesis_records)


def test_explicit_hash_keys_route_records(kpld, producers, kinesis, make_stream):
    stream = make_stream(kinesis, 4)
    shards = sorted(list_shards(kinesis, stream), key=lambda s: s.start)
    daemon = kpld()
    producer = producers(daemon)

    # For each shard: its first, last and middle hash key, under partition keys that MD5
    # elsewhere; mixed with records without an explicit hash key in the same batches.
    puts: list[Put] = []
    for si, shard in enumerate(shards):
        for j, ehk in enumerate((shard.start, shard.end, (shard.start + shard.end) // 2)):
            for rep in range(5):
                puts.append(
                    Put(
                        data=f"ehk-{si}-{j}-{rep}".encode(),
                        partition_key=f"routed-{si}-{j}-{rep}",
                        explicit_hash_key=str(ehk),
                    )
                )
    puts += [Put(data=f"plain-{i}".encode(), partition_key=f"plain-{i}") for i in range(100)]
    puts += [
        Put(data=b"ehk-zero", partition_key="zero", explicit_hash_key="0"),
        Put(data=b"ehk-max", partition_key="max", explicit_hash_key=str(MAX_HASH_KEY)),
    ]

    put_all(producer, stream, puts)

    assert all(p.error is None for p in puts), describe_failures(puts)
    contents = read_stream(kinesis, stream)
    check_delivery(puts, contents)  # checks shard range against the explicit hash key
    for p in puts:
        if p.explicit_hash_key is not None:
            expected = next(s for s in shards if s.contains(int(p.explicit_hash_key)))
            assert p.result.shard_id == expected.shard_id, (p, expected)
    assert next(p for p in puts if p.data == b"ehk-zero").result.shard_id == shards[0].shard_id
    assert next(p for p in puts if p.data == b"ehk-max").result.shard_id == shards[-1].shard_id


def test_aggregation_disabled_sends_one_user_record_per_kinesis_record(
    kpld, producers, kinesis, make_stream
):
    stream = make_stream(kinesis, 4)
    daemon = kpld(aggregation_enabled=False)
    producer = producers(daemon)

    puts = put_all(producer, stream, make_puts(300, 50, "noagg"))

    assert all(p.error is None for p in puts), describe_failures(puts)
    contents = read_stream(kinesis, stream)
    counts = check_delivery(puts, contents)
    assert counts["user_records"] == 300
    assert counts["kinesis_records"] == 300
    for k in contents.kinesis_records:
        assert len(k.user_records) == 1 and not k.aggregated, k
        # Sent alone, under its own partition key.
        assert k.partition_key == k.user_records[0].partition_key
    assert all(int(p.result.sub_sequence_number) == 0 for p in puts)


def test_flush_sends_buffered_records_at_once(kpld, producers, kinesis, make_stream):
    # A buffer time far beyond the generous flush timeout: only the flush can send them.
    stream = make_stream(kinesis, 2)
    daemon = kpld(record_max_buffered_time_ms=600_000, record_ttl_ms=1_200_000)
    producer = producers(daemon)

    puts = make_puts(100, 10, "flush")
    futures = [submit(producer, stream, p) for p in puts]
    producer.flush(timeout=60)

    assert all(f.done() for f in futures), "flush() returned before every record had its result"
    collect(puts, futures, timeout=1)
    assert all(p.error is None for p in puts), describe_failures(puts)
    counts = check_delivery(puts, read_stream(kinesis, stream))
    assert counts["user_records"] == 100

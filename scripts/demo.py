"""The Python half of scripts/demo.sh: create a stream on the local Kinesis server, put
records through the running kpld with the Python client, read every shard back with
GetRecords, deaggregate with aws-kinesis-agg and check each record is where kpld said.

  demo.py create ENDPOINT STREAM SHARDS
  demo.py run ENDPOINT STREAM SOCKET_PATH COUNT
"""

from __future__ import annotations

import base64
import hashlib
import sys
import time
from collections import Counter

import boto3
from aws_kinesis_agg.deaggregator import iter_deaggregate_records


def kinesis(endpoint: str):
    # Local servers accept any static credentials.
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def create(endpoint: str, stream: str, shards: int) -> None:
    from botocore.exceptions import EndpointConnectionError

    client = kinesis(endpoint)
    deadline = time.monotonic() + 60
    # A server started in the background a moment ago may not listen yet.
    while True:
        try:
            client.create_stream(StreamName=stream, ShardCount=shards)
            break
        except EndpointConnectionError:
            if time.monotonic() > deadline:
                sys.exit(f"no Kinesis server answers at {endpoint}")
            time.sleep(0.1)
    while client.describe_stream(StreamName=stream)["StreamDescription"]["StreamStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            sys.exit(f"stream {stream} did not become ACTIVE")
        time.sleep(0.1)
    print(f"created stream {stream} with {shards} shards")


def hash_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def run(endpoint: str, stream: str, socket_path: str, count: int) -> int:
    from kpld import Producer

    client = kinesis(endpoint)

    # 1. Put `count` records through kpld.
    t0 = time.monotonic()
    producer = Producer(socket_path=socket_path)
    sent = {}
    futures = []
    for i in range(count):
        key = f"user-{i % 100}"
        data = f'{{"event": {i}, "user": "{key}"}}'.encode()
        sent[data] = key
        futures.append((data, key, producer.put_record(stream, data, partition_key=key)))
    producer.flush()
    results = {data: f.result(timeout=120) for data, _, f in futures}
    elapsed = time.monotonic() - t0
    close = getattr(producer, "close", None)
    if close:
        close()
    print(f"\nput {count} records through kpld in {elapsed:.2f} s; a few results:")
    for data, key, _ in futures[:5]:
        r = results[data]
        print(
            f"  key={key:<9} -> {r.shard_id}  seq={r.sequence_number}  "
            f"sub_seq={r.sub_sequence_number}  attempts={len(r.attempts)}"
        )

    # 2. Read every shard back and deaggregate.
    shards = client.list_shards(StreamName=stream)["Shards"]
    ranges = {
        s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    }
    read = {}  # data -> (shard, seq, sub_seq, key)
    kinesis_records = 0
    copies = Counter()
    per_shard = Counter()
    for shard_id in ranges:
        it = client.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            resp = client.get_records(ShardIterator=it, Limit=10000)
            kinesis_records += len(resp["Records"])
            for u in iter_deaggregate_records(resp["Records"], data_format="Boto3"):
                k = u["kinesis"]
                data = base64.b64decode(k["data"]) if k.get("aggregated") else k["data"]
                copies[data] += 1
                per_shard[shard_id] += 1
                read[data] = (shard_id, k["sequenceNumber"], int(k.get("subSequenceNumber", 0)), k["partitionKey"])
            it = resp.get("NextShardIterator")
            if not resp["Records"]:
                break

    # 3. Check.
    problems = []
    for data, key in sent.items():
        r = results[data]
        if copies[data] != 1:
            problems.append(f"{data!r} read {copies[data]} times")
            continue
        shard_id, seq, sub, got_key = read[data]
        lo, hi = ranges[shard_id]
        if got_key != key:
            problems.append(f"{data!r}: key {got_key!r} != {key!r}")
        if shard_id != r.shard_id or (seq, sub) != (r.sequence_number, int(r.sub_sequence_number)):
            problems.append(f"{data!r}: read at {shard_id} {seq}/{sub}, result said {r.shard_id} {r.sequence_number}/{r.sub_sequence_number}")
        if not lo <= hash_key(key) <= hi:
            problems.append(f"{data!r}: on {shard_id} but MD5({key!r}) is outside its range")
    extra = sum(n for d, n in copies.items() if d not in sent)

    print(f"\nread back {sum(copies.values())} user records in {kinesis_records} Kinesis records:")
    for shard_id in sorted(ranges):
        print(f"  {shard_id}: {per_shard[shard_id]} user records")
    if problems or extra:
        print(f"\nFAILED: {len(problems)} problems, {extra} unexpected records")
        for p in problems[:20]:
            print("  " + p)
        return 1
    print(
        f"\n{count} records put, {sum(copies.values())} read back, all on their predicted shards "
        f"({kinesis_records} Kinesis records: {count / max(kinesis_records, 1):.1f} user records each)"
    )
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[1] == "create":
        create(argv[2], argv[3], int(argv[4]))
        return 0
    if len(argv) == 6 and argv[1] == "run":
        return run(argv[2], argv[3], argv[4], int(argv[5]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

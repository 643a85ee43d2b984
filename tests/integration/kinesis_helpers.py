"""Helpers for kpld's end-to-end tests: hash keys, shard listing, reading a whole stream back
with GetRecords and deaggregating it with the real aws-kinesis-agg deaggregator, and checking
what was delivered against the results kpld gave."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from aws_kinesis_agg.deaggregator import iter_deaggregate_records

MAX_HASH_KEY = 2**128 - 1
STREAM_ACTIVE_TIMEOUT_S = 120


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # inline table (only inside arrays)
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_table(settings: dict[str, Any], path: list[str]) -> str:
    """Plain keys first, then one [table] section per dict value (recursively)."""
    out = []
    if path:
        out.append("\n[" + ".".join(_toml_key(p) for p in path) + "]\n")
    for k, v in settings.items():
        if not isinstance(v, dict):
            out.append(f"{_toml_key(k)} = {_toml_value(v)}\n")
    for k, v in settings.items():
        if isinstance(v, dict):
            out.append(_toml_table(v, path + [k]))
    return "".join(out)


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    """Writes `settings` as a TOML file: scalars, lists, and dicts as [tables]
    (e.g. {"streams": {"s1": {"aggregation_enabled": False}}} -> [streams.s1])."""
    path.write_text(_toml_table(settings, []))
    return path


def record_error_code(exc: BaseException) -> Optional[str]:
    """The error code a `kpld.RecordFailed` carries."""
    for attr in ("error_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, str) and value:
            return value
    result = getattr(exc, "result", None)
    value = getattr(result, "error_code", None)
    return value if isinstance(value, str) else None


def hash_key_of(partition_key: str) -> int:
    """Kinesis hash key: MD5 of the UTF-8 partition key as a big-endian u128."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


@dataclass(frozen=True)
class Shard:
    shard_id: str
    start: int
    end: int
    parent: Optional[str]
    adjacent_parent: Optional[str]
    closed: bool

    def contains(self, hash_key: int) -> bool:
        return self.start <= hash_key <= self.end


def list_shards(client, stream: str) -> list[Shard]:
    """Every shard of the stream, closed ones included (follows NextToken)."""
    shards = []
    resp = client.list_shards(StreamName=stream)
    while True:
        for s in resp["Shards"]:
            r = s["HashKeyRange"]
            shards.append(
                Shard(
                    shard_id=s["ShardId"],
                    start=int(r["StartingHashKey"]),
                    end=int(r["EndingHashKey"]),
                    parent=s.get("ParentShardId"),
                    adjacent_parent=s.get("AdjacentParentShardId"),
                    closed="EndingSequenceNumber" in s.get("SequenceNumberRange", {}),
                )
            )
        token = resp.get("NextToken")
        if not token:
            return shards
        resp = client.list_shards(NextToken=token)


def wait_stream_active(client, stream: str, timeout: float = STREAM_ACTIVE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = client.describe_stream(StreamName=stream, Limit=1)["StreamDescription"][
            "StreamStatus"
        ]
        if status == "ACTIVE":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"stream {stream} still {status} after {timeout} s")
        time.sleep(0.1)


@dataclass
class UserRecord:
    """One user record as read back from the stream and deaggregated."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    explicit_hash_key: Optional[str]  # only known for records inside an aggregate
    data: bytes
    aggregated: bool


@dataclass
class KinesisRecord:
    """One Kinesis record and the user records it carried."""

    shard_id: str
    sequence_number: str
    partition_key: str
    user_records: list[UserRecord] = field(default_factory=list)

    @property
    def aggregated(self) -> bool:
        return any(u.aggregated for u in self.user_records)


@dataclass
class StreamContents:
    shards: list[Shard]
    kinesis_records: list[KinesisRecord]

    @property
    def user_records(self) -> list[UserRecord]:
        return [u for k in self.kinesis_records for u in k.user_records]

    def shard(self, shard_id: str) -> Shard:
        for s in self.shards:
            if s.shard_id == shard_id:
                return s
        raise KeyError(shard_id)


def _deaggregate(shard_id: str, record: dict) -> KinesisRecord:
    out = KinesisRecord(shard_id, record["SequenceNumber"], record["PartitionKey"])
    for u in iter_deaggregate_records([record], data_format="Boto3"):
        k = u["kinesis"]
        aggregated = bool(k.get("aggregated", False))
        # aws-kinesis-agg 1.2.3 re-base64-encodes the data of records it took out of an
        # aggregate; records that were not aggregated come back with the raw bytes.
        data = base64.b64decode(k["data"]) if aggregated else bytes(k["data"])
        out.user_records.append(
            UserRecord(
                shard_id=shard_id,
                sequence_number=k["sequenceNumber"],
                sub_sequence_number=int(k.get("subSequenceNumber", 0)),
                partition_key=k["partitionKey"],
                explicit_hash_key=k.get("explicitHashKey") if aggregated else None,
                data=data,
                aggregated=aggregated,
            )
        )
    return out


def read_stream(client, stream: str, timeout: float = 300) -> StreamContents:
    """Reads every shard (closed parents included) from TRIM_HORIZON until caught up and
    deaggregates every record with aws_kinesis_agg. Call it after every put has its result."""
    shards = list_shards(client, stream)
    records: list[KinesisRecord] = []
    deadline = time.monotonic() + timeout
    for shard in shards:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard.shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {stream} took over {timeout} s")
            resp = client.get_records(ShardIterator=iterator, Limit=10000)
            for r in resp["Records"]:
                records.append(_deaggregate(shard.shard_id, r))
            iterator = resp.get("NextShardIterator")
            # Caught up: an empty page on an open shard (both local servers return every
            # stored record without gaps). A closed shard ends with no NextShardIterator.
            if not resp["Records"] and resp.get("MillisBehindLatest", 0) == 0:
                break
    return StreamContents(shards, records)


# ---------------------------------------------------------------------------------------------
# putting through kpld and checking what was delivered


@dataclass
class Put:
    """One record put through kpld, and what came back for it."""

    data: bytes
    partition_key: str
    explicit_hash_key: Optional[str] = None
    result: Any = None  # the client's result on success
    error: Optional[BaseException] = None  # the exception on failure

    @property
    def hash_key(self) -> int:
        if self.explicit_hash_key is not None:
            return int(self.explicit_hash_key)
        return hash_key_of(self.partition_key)


def submit(producer, stream: str, put: Put):
    """put_record for one Put; returns the future (or a failed one if the call raised)."""
    kwargs: dict[str, Any] = {"partition_key": put.partition_key}
    if put.explicit_hash_key is not None:
        kwargs["explicit_hash_key"] = put.explicit_hash_key
    try:
        return producer.put_record(stream, put.data, **kwargs)
    except Exception as exc:  # a client may refuse an invalid record before sending it
        from concurrent.futures import Future

        failed: Future = Future()
        failed.set_exception(exc)
        return failed


def collect(puts: list[Put], futures: list, timeout: float = 300) -> None:
    """Waits for every future (generous timeout) and stores its result or error in its Put."""
    deadline = time.monotonic() + timeout
    for put, future in zip(puts, futures):
        try:
            put.result = future.result(timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            put.error = exc


def put_all(producer, stream: str, puts: list[Put], timeout: float = 300) -> list[Put]:
    """Puts every record, flushes, and waits for every result."""
    futures = [submit(producer, stream, p) for p in puts]
    producer.flush()
    collect(puts, futures, timeout)
    return puts


def attempts_of(put: Put) -> list:
    source = put.result if put.result is not None else put.error
    return list(getattr(source, "attempts", None) or [])


def describe_failures(puts: list[Put], limit: int = 10) -> str:
    failed = [p for p in puts if p.error is not None]
    lines = [f"{len(failed)} of {len(puts)} records failed"]
    for p in failed[:limit]:
        lines.append(
            f"  key={p.partition_key!r} ehk={p.explicit_hash_key} "
            f"code={record_error_code(p.error)} error={p.error!r}"
        )
    return "\n".join(lines)


def check_delivery(
    puts: list[Put], contents: StreamContents, allow_reported_mixed: bool = False
) -> dict[str, int]:
    """Checks what was delivered against what kpld answered, from the stream read back.

    A "mixed" Kinesis record is an aggregate holding a user record that hashes outside the
    shard it was read from; a consumer such as the KCL drops the whole aggregate. With
    `allow_reported_mixed=False` there must be none. With True (resharding tests) there may
    be some, because Kinesis routes an aggregate by its explicit hash key to whichever shard
    is open when it arrives: a split between kpld's ListShards and its PutRecords lands it
    on a child shard. Then kpld must have noticed and sent every record of that aggregate
    again: each one's result must list a failed attempt and name another copy.

    Mixed aggregates set aside, for every successful put:
    - it arrived exactly once (more copies only if its result lists more than one attempt),
      with its data and partition key intact;
    - the (sequence number, sub-sequence number) of its result identify one of its copies,
      read from the shard its result named, whose hash range contains the record's hash
      key (explicit hash key if given, else MD5 of the partition key);
    - an explicit hash key it set is the one the aggregate carries;
    and nothing arrived that was not put successfully (failed records are absent).
    Returns counts for further assertions."""
    by_data: dict[bytes, Put] = {}
    for p in puts:
        assert p.data not in by_data, "test bug: record data must be unique"
        by_data[p.data] = p

    unexpected = [u for u in contents.user_records if u.data not in by_data]
    assert not unexpected, (
        f"{len(unexpected)} user records in the stream were never put, e.g. {unexpected[:3]}"
    )

    # 1. Mixed aggregates.
    mixed: list[KinesisRecord] = []
    for k in contents.kinesis_records:
        shard = contents.shard(k.shard_id)
        outside = [u for u in k.user_records if not shard.contains(by_data[u.data].hash_key)]
        if not outside:
            continue
        detail = (
            f"Kinesis record {k.sequence_number} on {k.shard_id} ({shard.start}..{shard.end}) "
            f"holds {len(outside)} of {len(k.user_records)} user records that hash outside "
            f"it (a consumer such as the KCL would drop the whole aggregate): "
            + "; ".join(
                f"{u.data!r} key={u.partition_key!r} hash={by_data[u.data].hash_key} "
                f"result={by_data[u.data].result!r}"
                for u in outside
            )
        )
        assert allow_reported_mixed, detail
        for u in k.user_records:
            p = by_data[u.data]
            assert p.error is None, f"{detail}\n{u.data!r} failed: {p.error!r}"
            r = p.result
            assert (r.sequence_number, int(r.sub_sequence_number)) != (
                k.sequence_number,
                u.sub_sequence_number,
            ) and any(not a.success for a in attempts_of(p)), (
                f"{detail}\nkpld did not send {u.data!r} again: its result names this "
                f"aggregate or lists no failed attempt: {r!r}"
            )
        mixed.append(k)
    mixed_ids = {id(k) for k in mixed}

    # 2. Every record, mixed aggregates set aside.
    copies: dict[bytes, list[UserRecord]] = {}
    for k in contents.kinesis_records:
        if id(k) not in mixed_ids:
            for u in k.user_records:
                copies.setdefault(u.data, []).append(u)

    duplicates = 0
    for p in puts:
        got = copies.get(p.data, [])
        if p.error is not None:
            assert not got, (
                f"record with key {p.partition_key!r} failed ({p.error!r}) "
                f"but is in the stream: {got[:3]}"
            )
            continue
        r = p.result
        assert got, (
            f"record with key {p.partition_key!r} succeeded (shard {r.shard_id}, "
            f"seq {r.sequence_number}/{r.sub_sequence_number}) but is not in the stream"
        )
        if len(got) > 1:
            assert len(attempts_of(p)) > 1, (
                f"record with key {p.partition_key!r} is in the stream {len(got)} times "
                f"though its result reports a single attempt: {got}"
            )
            duplicates += len(got) - 1
        for u in got:
            assert u.partition_key == p.partition_key, (u, p)
        ids = [(u.sequence_number, u.sub_sequence_number) for u in got]
        mine = (r.sequence_number, int(r.sub_sequence_number))
        assert mine in ids, (
            f"result of key {p.partition_key!r} says seq {mine} on {r.shard_id}; "
            f"the stream has it at {[(u.shard_id,) + i for u, i in zip(got, ids)]}"
        )
        u = got[ids.index(mine)]
        assert u.shard_id == r.shard_id, (
            f"result says shard {r.shard_id}, record was read from {u.shard_id}"
        )
        shard = contents.shard(u.shard_id)
        assert shard.contains(p.hash_key), (
            f"record with key {p.partition_key!r} (hash {p.hash_key}) read from "
            f"{shard.shard_id} whose range is {shard.start}..{shard.end}"
        )
        if p.explicit_hash_key is not None and u.aggregated:
            assert u.explicit_hash_key == p.explicit_hash_key, (u, p)

    return {
        "user_records": sum(len(v) for v in copies.values()),
        "kinesis_records": len(contents.kinesis_records),
        "mixed_aggregates": len(mixed),
        "duplicates": duplicates,
    }


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120.0) -> Any:
    """Polls `probe` until it returns something truthy and returns it; fails naming
    `what` and the last value after `timeout` (an upper bound, never a speed check)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not seen within {timeout} s (last: {last!r})")


def stats(kpld_bin: str, daemon) -> dict:
    """`kpld stats --json` of a running daemon, parsed (fails on a non-zero exit)."""
    out = subprocess.run(
        [kpld_bin, "stats", "--socket", daemon.socket_path, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)

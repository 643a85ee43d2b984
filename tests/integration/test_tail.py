"""`kpld tail` against real local servers (kinesalite and kinesis-local): every record kpld
put is printed once, with the shard, sequence and sub-sequence numbers its result named;
aggregated, unaggregated, compressed and binary records; parents before children across a
split; `--count`; `--from at-timestamp`. And `kpld local`: the daemon with its own endpoint,
read back with `kpld tail`."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from kinesis_helpers import list_shards, wait_stream_active

TAIL_TIMEOUT_S = 120


def tail(kpld_bin: str, endpoint: str, stream: str, *args: str) -> list[dict]:
    """Runs `kpld tail STREAM --endpoint URL --json ARGS` and returns its records."""
    out = subprocess.run(
        [kpld_bin, "tail", stream, "--endpoint", endpoint, "--json", *args],
        capture_output=True,
        timeout=TAIL_TIMEOUT_S,
        check=False,
    )
    assert out.returncode == 0, (out.returncode, out.stderr.decode())
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def data_of(rec: dict) -> bytes:
    if "data" in rec:
        return rec["data"].encode()
    return base64.b64decode(rec["data_base64"])


def put_and_wait(producer, stream: str, items: list[tuple]) -> list:
    """items: (partition_key, data, explicit_hash_key, compression); returns the results."""
    futs = [
        producer.put_record(stream, data, pk, ehk, compression=comp) for pk, data, ehk, comp in items
    ]
    return [f.result(timeout=120) for f in futs]


@pytest.fixture(params=["kinesalite", "kinesis-local"])
def server(request, kinesis, kinesis_mock):
    return kinesis if request.param == "kinesalite" else kinesis_mock


def test_tail_prints_every_record_once_where_its_result_says(
    kpld, producers, server, make_stream, kpld_bin
):
    endpoint = server.meta.endpoint_url
    stream = make_stream(server, 2)
    text = [(f"k{i}", f"text {i}".encode(), None, None) for i in range(20)]
    binary = [(f"b{i}", bytes([0xFF, 0xFE, i, 0x00]), None, None) for i in range(5)]
    gzipped = [(f"g{i}", (f'{{"n":{i},"msg":"hello"}}' * 4).encode(), None, "gzip") for i in range(5)]
    routed = [("ehk", b"routed by hash key", str(2**127 + 5), None)]
    aggregated = kpld(kinesis_endpoint=endpoint)
    items = text + binary + gzipped + routed
    results = put_and_wait(producers(aggregated), stream, items)
    # The same stream gets records sent one per Kinesis record too.
    plain = [(f"p{i}", f"plain {i}".encode(), None, None) for i in range(10)]
    single = kpld(kinesis_endpoint=endpoint, aggregation_enabled=False)
    results += put_and_wait(producers(single), stream, plain)
    items += plain
    assert any(r.sub_sequence_number > 0 for r in results), "some records were aggregated"

    got = tail(kpld_bin, endpoint, stream)
    assert len(got) == len(items), got
    by_place = {(g["shard_id"], g["sequence_number"], g["sub_sequence_number"]): g for g in got}
    assert len(by_place) == len(got), "every user record printed once"
    for (pk, data, ehk, _), r in zip(items, results):
        g = by_place[(r.shard_id, r.sequence_number, r.sub_sequence_number)]
        assert g["stream"] == stream and g["partition_key"] == pk, g
        assert data_of(g) == data, g  # gzip undone, binary as data_base64
        if ehk is not None:
            assert g["explicit_hash_key"] == ehk, g
        else:
            assert "explicit_hash_key" not in g, g
        assert ("data" in g) == (data[:1] != b"\xff"), g
        datetime.datetime.fromisoformat(g["approximate_arrival"].replace("Z", "+00:00"))

    # Without --json: one line per record, the data itself.
    out = subprocess.run(
        [kpld_bin, "tail", stream, "--endpoint", endpoint, "--count", "3"],
        capture_output=True,
        timeout=TAIL_TIMEOUT_S,
        check=True,
    )
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 3, lines
    printed = {d.decode("utf-8", "replace") for _, d, _, _ in items}
    printed |= {"base64:" + base64.b64encode(d).decode() for _, d, _, _ in binary}
    assert set(lines) <= printed, lines


def test_tail_reads_parents_before_children_across_a_split(
    kpld, producers, kinesis_mock, make_stream, kpld_bin
):
    client = kinesis_mock
    endpoint = client.meta.endpoint_url
    stream = make_stream(client, 1)
    daemon = kpld(kinesis_endpoint=endpoint)
    producer = producers(daemon)
    before = put_and_wait(producer, stream, [(f"k{i}", f"before {i}".encode(), None, None) for i in range(30)])
    (parent,) = list_shards(client, stream)
    client.split_shard(
        StreamName=stream,
        ShardToSplit=parent.shard_id,
        NewStartingHashKey=str((parent.start + parent.end) // 2 + 1),
    )
    wait_stream_active(client, stream)
    after = []
    deadline = time.monotonic() + TAIL_TIMEOUT_S
    # Until kpld's map has the children, records may still be put to the parent's range
    # and rerouted: put until results name a child.
    while not any(r.shard_id != parent.shard_id for r in after):
        assert time.monotonic() < deadline, "no record landed on a child shard"
        n = len(after)
        after += put_and_wait(producer, stream, [(f"k{i}", f"after {n + i}".encode(), None, None) for i in range(30)])
    got = tail(kpld_bin, endpoint, stream)
    assert len(got) == len(before) + len(after), got
    shards = [g["shard_id"] for g in got]
    last_parent = max(i for i, s in enumerate(shards) if s == parent.shard_id)
    first_child = min(i for i, s in enumerate(shards) if s != parent.shard_id)
    assert last_parent < first_child, shards
    assert {data_of(g).decode() for g in got[: len(before)]} == {f"before {i}" for i in range(30)}


def test_tail_from_a_timestamp_skips_what_came_before(
    kpld, producers, server, make_stream, kpld_bin
):
    endpoint = server.meta.endpoint_url
    stream = make_stream(server, 2)
    daemon = kpld(kinesis_endpoint=endpoint)
    producer = producers(daemon)
    put_and_wait(producer, stream, [(f"k{i}", f"old {i}".encode(), None, None) for i in range(10)])
    time.sleep(1.5)
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(1.5)
    put_and_wait(producer, stream, [(f"k{i}", f"new {i}".encode(), None, None) for i in range(10)])
    got = tail(kpld_bin, endpoint, stream, "--from", f"at-timestamp:{since}")
    assert sorted(data_of(g).decode() for g in got) == sorted(f"new {i}" for i in range(10)), got
    # --count stops after that many, whatever is left.
    assert len(tail(kpld_bin, endpoint, stream, "--count", "4")) == 4


def test_tail_names_what_is_wrong(kpld_bin, kinesis):
    endpoint = kinesis.meta.endpoint_url
    out = subprocess.run(
        [kpld_bin, "tail", "s", "--endpoint", endpoint, "--from", "yesterday"],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 2 and "trim-horizon, latest or at-timestamp" in out.stderr.decode()
    out = subprocess.run(
        [kpld_bin, "tail", f"no-such-{uuid.uuid4().hex[:8]}", "--endpoint", endpoint],
        capture_output=True,
        timeout=TAIL_TIMEOUT_S,
    )
    assert out.returncode == 1 and "ResourceNotFoundException" in out.stderr.decode(), out


def test_kpld_local_serves_records_that_tail_reads_back(kpld_bin, kpld_client_module, tmp_path):
    sock = Path(f"/tmp/kpld-local-{uuid.uuid4().hex[:8]}.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KPLD_"))}
    proc = subprocess.Popen(
        [kpld_bin, "local", "--socket", str(sock), "--shards", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        first = proc.stdout.readline().decode()
        m = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        assert m, first
        url = m.group(1)
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, first
            time.sleep(0.05)
        with kpld_client_module.Producer(str(sock)) as p:
            futs = [p.put_record("fresh", f"r{i}".encode(), partition_key=f"k{i}") for i in range(30)]
            results = [f.result(timeout=60) for f in futs]
        # Streams are created on first use, with the shards asked for.
        assert len({r.shard_id for r in results}) == 3
        got = tail(kpld_bin, url, "fresh")
        assert sorted(data_of(g).decode() for g in got) == sorted(f"r{i}" for i in range(30))
        # `--config` is accepted after the subcommand too (`kpld stats --config F`).
        cfg = tmp_path / "stats.toml"
        cfg.write_text(f'socket_path = "{sock}"\n')
        out = subprocess.run(
            [kpld_bin, "stats", "--config", str(cfg), "--json"],
            capture_output=True,
            timeout=60,
            env=env,
        )
        assert out.returncode == 0, out.stderr.decode()
        assert json.loads(out.stdout)["counters"]["user_records_put"] == 30
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0

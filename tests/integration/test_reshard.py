"""Resharding while records flow (kinesis-local: the local server with SplitShard and
MergeShards): every record still arrives exactly once (as a consumer that drops mixed
aggregates sees the stream), an aggregate that landed on a shard not holding all its records
was reported and its records sent again, and each result names the shard the record was
read from.

kinesis-local is slow (about one PutRecords call per second), so the test is small: records
are put at a steady pace from a thread while the test splits one shard and then merges two.
The reshards are gated on progress (results received), never on elapsed time."""

from __future__ import annotations

import threading
import time

from kinesis_helpers import (
    Put,
    check_delivery,
    collect,
    describe_failures,
    list_shards,
    read_stream,
    submit,
    wait_stream_active,
)

PROGRESS_TIMEOUT_S = 300
PACE_S = 0.02  # between puts: keeps records flowing during the reshards


class Putter(threading.Thread):
    """Puts records at a steady pace until stopped (and at least `minimum` records)."""

    def __init__(self, producer, stream: str, minimum: int, maximum: int):
        super().__init__(daemon=True)
        self.producer, self.stream = producer, stream
        self.minimum, self.maximum = minimum, maximum
        self.puts: list[Put] = []
        self.futures: list = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            i = 0
            while i < self.maximum and (i < self.minimum or not self.stop.is_set()):
                put = Put(f"reshard-{i:05d}".encode(), f"key-{i % 60}")
                self.futures.append(submit(self.producer, self.stream, put))
                self.puts.append(put)
                i += 1
                time.sleep(PACE_S)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def done(self) -> int:
        return sum(1 for f in list(self.futures) if f.done())


def wait_progress(putter: Putter, at_least: int) -> None:
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while putter.done() < at_least:
        assert putter.error is None, putter.error
        assert time.monotonic() < deadline, (
            f"only {putter.done()} of {len(putter.futures)} records had results after "
            f"{PROGRESS_TIMEOUT_S} s (waiting for {at_least})"
        )
        time.sleep(0.05)


def test_split_and_merge_while_records_flow(kpld, producers, kinesis_mock, make_stream):
    client = kinesis_mock
    stream = make_stream(client, 2)
    daemon = kpld(kinesis_endpoint=client.meta.endpoint_url)
    producer = producers(daemon)

    putter = Putter(producer, stream, minimum=240, maximum=5000)
    putter.start()
    try:
        # 1. Split the first shard at the middle of its range once records are landing.
        wait_progress(putter, 40)
        first = sorted(list_shards(client, stream), key=lambda s: s.start)[0]
        client.split_shard(
            StreamName=stream,
            ShardToSplit=first.shard_id,
            NewStartingHashKey=str((first.start + first.end) // 2 + 1),
        )
        wait_stream_active(client, stream)
        split_at = len(putter.futures)

        # 2. Once records put after the split have results, merge the upper child of the
        #    split with the original second shard (adjacent ranges).
        wait_progress(putter, split_at + 40)
        open_shards = sorted(
            (s for s in list_shards(client, stream) if not s.closed), key=lambda s: s.start
        )
        assert len(open_shards) == 3, open_shards
        client.merge_shards(
            StreamName=stream,
            ShardToMerge=open_shards[1].shard_id,
            AdjacentShardToMerge=open_shards[2].shard_id,
        )
        wait_stream_active(client, stream)
        merged_at = len(putter.futures)

        # 3. Keep putting until records put after the merge have results too.
        wait_progress(putter, merged_at + 40)
    finally:
        putter.stop.set()
        putter.join(timeout=PROGRESS_TIMEOUT_S)
    assert putter.error is None, putter.error
    assert not putter.is_alive()

    producer.flush()
    collect(putter.puts, putter.futures, timeout=PROGRESS_TIMEOUT_S)
    puts = putter.puts
    assert all(p.error is None for p in puts), describe_failures(puts)

    contents = read_stream(client, stream)
    assert len(contents.shards) == 5, contents.shards  # 2 + 2 children + 1 merged
    # Mixed aggregates can happen here (an aggregate sent just before a split lands on a
    # child shard): kpld must report each one and send its records again.
    counts = check_delivery(puts, contents, allow_reported_mixed=True)
    assert counts["user_records"] - counts["duplicates"] == len(puts)
    # Records really went to the new shards after the reshards.
    used = {p.result.shard_id for p in puts}
    children = {s.shard_id for s in contents.shards if s.parent is not None}
    assert used & children, f"no record landed on a shard created by the reshard: {used}"

"""Streams a client makes the daemon hold are bounded: idle stream actors are evicted
(`stream_idle_timeout_ms`) and their number is capped (`max_streams`), against kinesalite
with `streams_allowed` unset. The daemon goes on serving the live streams throughout.

RSS bounds are generous (a shared machine, an allocator that keeps some freed memory);
waits are bounded polls, never what a test asserts.
"""

from __future__ import annotations

import time

import pytest

from kinesis_helpers import wait_for


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _put_ok(producer, stream: str, i: int) -> None:
    r = producer.put_record(stream, f"live-{i}".encode(), partition_key=f"k{i}").result(timeout=60)
    assert r.shard_id, r


def test_ten_thousand_unknown_streams_are_forgotten_once_idle_and_live_ones_go_on(
    kpld, producers, kinesis, make_stream, kpld_client_module
):
    RecordFailed = kpld_client_module.RecordFailed
    live = make_stream(kinesis, 1)
    daemon = kpld(stream_idle_timeout_ms=500, max_streams=20000, record_max_buffered_time_ms=10)
    producer = producers(daemon)
    _put_ok(producer, live, 0)
    rss_idle = _rss_bytes(daemon.proc.pid)

    # Waves, so that kinesalite (and kpld's descriptors) see at most 500 ListShards at once.
    names = [f"kpld-missing-{i:05d}" for i in range(10_000)]
    peak_streams = 0
    rss_peak = rss_idle
    for w in range(0, len(names), 500):
        futs = [producer.put_record(n, b"x", partition_key="k") for n in names[w : w + 500]]
        peak_streams = max(peak_streams, producer.daemon_stats()["live_streams"])
        for f in futs:
            with pytest.raises(RecordFailed) as e:
                f.result(timeout=120)
            assert e.value.code == "ResourceNotFoundException", e.value
        rss_peak = max(rss_peak, _rss_bytes(daemon.proc.pid))
        _put_ok(producer, live, w + 1)
    # Actors of the first waves may already be gone; many were live at once.
    assert peak_streams > 400, peak_streams

    i = [100_000]

    def only_the_live_stream_left():
        # Traffic keeps the live stream's actor; every other one must go.
        i[0] += 1
        _put_ok(producer, live, i[0])
        s = producer.daemon_stats()
        names_left = {x["name"] for x in s["streams"]}
        return s if s["live_streams"] == 1 and names_left <= {live} else None

    s = wait_for("idle streams evicted", only_the_live_stream_left, timeout=120)
    assert [x["name"] for x in s["streams"]] in ([live], []), s["streams"]
    time.sleep(2.5)  # kpld trims the heap 1 s after the last eviction
    rss_after = _rss_bytes(daemon.proc.pid)
    print(
        f"RSS idle {rss_idle / 2**20:.1f} MiB, peak {rss_peak / 2**20:.1f} MiB, "
        f"after eviction {rss_after / 2**20:.1f} MiB; peak live streams {peak_streams}"
    )
    # Generous: freed memory the allocator keeps is allowed, growth per name is not.
    assert rss_after < rss_idle + 64 * 2**20, (rss_idle, rss_peak, rss_after)
    # And memory was given back once the actors went (kpld trims the heap after
    # evictions; without it RSS stayed at its peak: idle 25.2, peak 46.5, after 46.5 MiB).
    assert rss_after <= rss_peak - 2 * 2**20, (rss_idle, rss_peak, rss_after)
    # The live stream still works after all that.
    _put_ok(producer, live, 1)


def test_past_max_streams_a_new_stream_is_refused_per_record_and_live_ones_go_on(
    kpld, producers, kinesis, make_stream, kpld_client_module
):
    RecordFailed = kpld_client_module.RecordFailed
    live = make_stream(kinesis, 1)
    daemon = kpld(max_streams=3)
    producer = producers(daemon)
    _put_ok(producer, live, 0)
    for n in ("kpld-missing-a", "kpld-missing-b"):
        with pytest.raises(RecordFailed) as e:
            producer.put_record(n, b"x", partition_key="k").result(timeout=60)
        assert e.value.code == "ResourceNotFoundException", e.value
    with pytest.raises(RecordFailed) as e:
        producer.put_record("kpld-missing-c", b"x", partition_key="k").result(timeout=60)
    assert e.value.code == "TooManyStreams", e.value
    assert "max_streams" in e.value.message and "3" in e.value.message, e.value.message
    assert e.value.attempts == []
    # The streams already live are untouched, and so is the connection.
    _put_ok(producer, live, 1)
    with pytest.raises(RecordFailed) as e:
        producer.put_record("kpld-missing-a", b"x", partition_key="k").result(timeout=60)
    assert e.value.code == "ResourceNotFoundException", e.value
    assert producer.daemon_stats()["live_streams"] == 3

"""SIGTERM makes kpld send what it buffers at once, answer every record, and exit 0."""

from __future__ import annotations

import os

from kinesis_helpers import Put, check_delivery, collect, describe_failures, read_stream, submit

# Far longer than the test's generous exit timeout: a daemon that waited for the buffer
# timer instead of flushing on SIGTERM could not exit in time.
BUFFER_TIME_MS = 600_000
EXIT_TIMEOUT_S = 120


def wait_until_daemon_has_read(producer) -> None:
    """Makes sure the daemon has read every frame sent so far, without flushing: the
    daemon answers a stats request after the frames sent before it on the connection."""
    producer.daemon_stats()


def test_sigterm_flushes_buffered_records_and_exits_zero(kpld, producers, kinesis, make_stream):
    stream = make_stream(kinesis, 2)
    daemon = kpld(
        record_max_buffered_time_ms=BUFFER_TIME_MS,
        record_ttl_ms=BUFFER_TIME_MS * 2,
        shutdown_grace_ms=60_000,
    )
    producer = producers(daemon)

    puts = [Put(f"shutdown-{i}".encode() + os.urandom(16), f"k{i % 17}") for i in range(300)]
    futures = [submit(producer, stream, p) for p in puts]
    wait_until_daemon_has_read(producer)
    assert not any(f.done() for f in futures), "records were answered before the shutdown"

    rc = daemon.terminate(timeout=EXIT_TIMEOUT_S)

    assert rc == 0, daemon.log()[-5000:]
    collect(puts, futures, timeout=30)
    assert all(p.error is None for p in puts), describe_failures(puts)
    counts = check_delivery(puts, read_stream(kinesis, stream))
    assert counts["user_records"] == 300

#!/usr/bin/env python3
"""Throughput of the kpld Python client (a benchmark, not a test).

Against a running daemon (the stream must exist)::

    python clients/python/bench.py --socket /tmp/kpld.sock --stream bench \
        --records 500000 --batch 1000 --size 100

prints, for records of ``--size`` bytes put with ``put_records`` in batches
of ``--batch``, each with its own future:

* hand-over rate: records/s the process gives to the daemon (put_records
  calls only; the daemon's backpressure included);
* with results: records/s until every record has its final result (each
  future's ``result()`` in turn; ``--mode batch``: ``put_batch`` and each
  batch's ``wait()``; ``--mode aio``: the asyncio producer, every future
  awaited), and how many failed;
* the client's CPU time per record (user + system of this process).

``--codec-only`` measures the client's own work without a daemon: encode
the PutRequest frames, create the futures, decode matching Results frames,
resolve the futures and read every result.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

import kpld  # noqa: E402
from kpld import _codec, _schema  # noqa: E402
from kpld._future import RecordFuture  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def batches(n: int, batch: int, size: int, keys: int = 0):
    """Batches of ``batch`` records of ``size`` bytes; record i has key i % ``keys``
    (``keys`` 0: one key per record of a batch)."""
    payload = os.urandom(size)
    names = [f"partition-{i:06d}" for i in range(keys or batch)]
    sent = 0
    while sent < n:
        k = min(batch, n - sent)
        yield [(names[(sent + i) % len(names)], payload) for i in range(k)]
        sent += k


def bench_daemon(args: argparse.Namespace) -> None:
    with kpld.Producer(args.socket) as p:
        info = p.connect()
        print(f"daemon: {info.server_version}, max_frame_size {info.max_frame_size}")
        # warm-up: shard map, connections
        p.put_records(args.stream, [("warm", b"x")])[0].result(timeout=60)
        chunks = list(batches(args.records, args.batch, args.size, args.keys))
        futures = []
        held = []
        c0, t0 = cpu_seconds(), time.perf_counter()
        if args.mode == "batch":
            for chunk in chunks:
                held.append(p.put_batch(args.stream, chunk))
        else:
            for chunk in chunks:
                futures.extend(p.put_records(args.stream, chunk))
        t1 = time.perf_counter()
        if args.mode == "batch":
            failed = sum(b.wait().failed for b in held)
            n = sum(len(b) for b in held)
        else:
            # every result awaited, one by one, as an application would
            failed = 0
            for f in futures:
                try:
                    f.result()
                except kpld.KpldError:
                    failed += 1
            n = len(futures)
        t2, c2 = time.perf_counter(), cpu_seconds()
        print(f"records:            {n} x {args.size} bytes, batches of {args.batch}, mode {args.mode}")
        print(f"hand-over:          {n / (t1 - t0):12,.0f} records/s  ({t1 - t0:.2f} s)")
        print(f"with results:       {n / (t2 - t0):12,.0f} records/s  ({t2 - t0:.2f} s, {failed} failed)")
        print(f"client CPU:         {(c2 - c0) / n * 1e6:12.2f} us/record")
        if failed and futures:
            print(f"first failure:      {next(f.exception() for f in futures if f.exception() is not None)!r}")
        elif failed:
            print(f"first failure:      {next(b.failures()[0] for b in held if b.failed)!r}")


def bench_aio(args: argparse.Namespace) -> None:
    import asyncio

    from kpld.aio import AsyncProducer

    async def run() -> None:
        async with AsyncProducer(args.socket) as p:
            await p.put_record(args.stream, b"x", partition_key="warm")
            chunks = list(batches(args.records, args.batch, args.size, args.keys))
            futures = []
            c0, t0 = cpu_seconds(), time.perf_counter()
            for chunk in chunks:
                futures.extend(await p.put_records(args.stream, chunk))
            t1 = time.perf_counter()
            failed = 0
            for f in futures:  # every result awaited, one by one
                try:
                    await f
                except kpld.KpldError:
                    failed += 1
            t2, c2 = time.perf_counter(), cpu_seconds()
            n = len(futures)
            print(f"records:            {n} x {args.size} bytes, batches of {args.batch}, mode aio")
            print(f"hand-over:          {n / (t1 - t0):12,.0f} records/s  ({t1 - t0:.2f} s)")
            print(f"with results:       {n / (t2 - t0):12,.0f} records/s  ({t2 - t0:.2f} s, {failed} failed)")
            print(f"client CPU:         {(c2 - c0) / n * 1e6:12.2f} us/record")

    asyncio.run(run())


def bench_codec(args: argparse.Namespace) -> None:
    n, batch = args.records, args.batch
    shard = "shardId-000000000001"
    seq = "49654326434823474578457384758437584375843758437584375843"
    pending = {}
    next_id = 1
    done = []
    try:  # how the reader thread resolves a frame's futures
        from kpld._future import resolve_many

        def resolve(_, futures, outcomes):
            resolve_many(futures, outcomes, kpld.Result)

    except ImportError:  # an older client: one at a time

        def resolve(_, futures, outcomes):
            for f, o in zip(futures, outcomes):
                f.set_result(o)

    c0, t0 = cpu_seconds(), time.perf_counter()
    encoded = 0
    for chunk in batches(n, batch, args.size):
        b = _codec.encode_put_frames(next_id, "bench", chunk)
        encoded += sum(len(f) for f in b.frames)
        futs = [RecordFuture() for _ in range(b.count)]
        pending.update(zip(range(next_id, next_id + b.count), futs))
        # the daemon's answer for this batch (built outside the timed work below)
        t_build = time.perf_counter()
        results = [
            {
                "id": next_id + i,
                "success": True,
                "shard_id": shard,
                "sequence_number": seq,
                "sub_sequence_number": i,
                "attempts": [{"success": True, "delay_ms": 100, "duration_ms": 20}],
            }
            for i in range(b.count)
        ]
        frame = _codec.frame(_schema.encode("ServerMessage", {"results": {"results": results}}))
        t0 += time.perf_counter() - t_build
        kind, (ids, outcomes) = _codec.decode_server_message(frame, 4, len(frame))
        pop = pending.pop
        resolve(futs, [pop(rid) for rid in ids], outcomes)
        next_id += b.count
        done.extend(futs)
    for f in done:  # every result read, as an application does
        f.result()
    t1 = time.perf_counter()
    c1 = cpu_seconds()
    print(f"codec only: {n / (t1 - t0):,.0f} records/s (encode + futures + decode + resolve + result())")
    print(f"wire:       {encoded / n:.0f} bytes/record")
    print(f"(CPU incl. building the fake results: {(c1 - c0) / n * 1e6:.2f} us/record)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", default=None, help="daemon socket (default: $KPLD_SOCKET or /run/kpld/kpld.sock)")
    ap.add_argument("--stream", default="bench")
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--size", type=int, default=100, help="data bytes per record")
    ap.add_argument("--keys", type=int, default=0, help="distinct partition keys (default: one per record of a batch)")
    ap.add_argument(
        "--mode",
        choices=["futures", "batch", "aio"],
        default="futures",
        help="futures: put_records, then f.result() of every future; batch: put_batch, then wait(); "
        "aio: AsyncProducer.put_records, then await every future",
    )
    ap.add_argument("--codec-only", action="store_true", help="no daemon: measure the client's own work")
    args = ap.parse_args()
    print(f"kpld {kpld.__version__}, Python {sys.version.split()[0]}")
    if args.codec_only:
        bench_codec(args)
    elif args.mode == "aio":
        bench_aio(args)
    else:
        bench_daemon(args)


if __name__ == "__main__":
    main()

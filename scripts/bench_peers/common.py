"""Shared by the peer producers: the workload kpld-bench sends (same keys, same
data) and the figures they print, in kpld-bench's `name: value` form."""

import argparse
import resource
import time

RECORD_DATA_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


def parse_args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--endpoint", required=True, help="Kinesis endpoint (kpld-bench serve-fake)")
    p.add_argument("--stream", default="bench")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--record-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=1000)
    return p.parse_args()


def workload(args):
    """The keys and data kpld-bench uses: 20-character keys taken in turn."""
    keys = [f"partition-key-{i:06}" for i in range(max(args.keys, 1))]
    data = bytes(RECORD_DATA_ALPHABET[i % 36] for i in range(args.record_size))
    return keys, data


class Meter:
    """Wall time, process CPU time (all threads) and peak RSS of a run."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.c0 = time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        return False

    def report(self, name, args, sent, succeeded, extra=()):
        print(f"# {name}: {args.record_size}-byte records, {args.keys} keys, stream {args.stream}")
        print(f"records_sent: {sent}")
        print(f"records_succeeded: {succeeded}")
        print(f"elapsed_s: {self.wall:.3f}")
        print(f"throughput_records_per_s: {succeeded / self.wall:.0f}")
        print(f"cpu_s: {self.cpu:.2f}")
        print(f"cpu_us_per_record: {self.cpu * 1e6 / max(succeeded, 1):.1f}")
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"peak_rss_mib: {peak_kib / 1024:.1f}")
        for line in extra:
            print(line)

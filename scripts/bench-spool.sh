#!/usr/bin/env bash
# The spool's cost: the same closed-loop run with durability = "memory" and
# with durability = "disk" (spool_fsync = batch), alternated ROUNDS times in
# one session, against the count-only double. Prints each run's records/s,
# kpld CPU per record, p99 latency and the spool's fsyncs/s, then the
# medians and their ratios (BENCHMARKS.md, "Spool").
#
#   scripts/bench-spool.sh [RECORDS] [ROUNDS]     (default 2000000 3)
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-2000000}
rounds=${2:-3}
cargo build --release -q -p kpld -p kpld-bench
spool=$(mktemp -d "${TMPDIR:-/tmp}/kpld-bench-spool.XXXXXX")
trap 'rm -rf "$spool"' EXIT
out=$(mktemp)
for r in $(seq 1 "$rounds"); do
  for mode in memory disk; do
    rm -rf "$spool"/*
    target/release/kpld-bench --records "$records" --no-floor \
      --set durability="$mode" --set spool_dir="\"$spool/s\"" --set spool_fsync=batch \
      > "$out.run" 2>&1 || { cat "$out.run"; exit 1; }
    rps=$(sed -n 's/^throughput_records_per_s: //p' "$out.run")
    cpu=$(sed -n 's/^daemon_cpu_us_per_record: //p' "$out.run")
    p99=$(sed -n 's/^latency_p99_ms: //p' "$out.run")
    fs=$(sed -n 's/^spool_fsyncs_per_s: //p' "$out.run")
    other=$(sed -n 's/^machine_other_processes_cores: \([0-9.]*\).*/\1/p' "$out.run")
    echo "round $r $mode: records_per_s $rps cpu_us_per_record $cpu p99_ms $p99 fsyncs_per_s ${fs:-0} other_cores $other"
    echo "$mode $rps $cpu $p99" >> "$out"
  done
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {m: [statistics.median(float(r[i]) for r in rows if r[0] == m) for i in (1, 2, 3)] for m in ("memory", "disk")}
for m, (rps, cpu, p99) in med.items():
    print(f"median {m}: records_per_s {rps:.0f} cpu_us_per_record {cpu:.3f} p99_ms {p99:.1f}")
(mr, mc, mp), (dr, dc, dp) = med["memory"], med["disk"]
print(f"disk/memory: records_per_s {dr / mr:.2f}x, cpu_us_per_record +{dc - mc:.3f} us, p99 {dp / mp:.2f}x")
PY
rm -f "$out" "$out.run"

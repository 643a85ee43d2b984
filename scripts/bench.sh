#!/usr/bin/env bash
# scripts/bench.sh: the measurements behind BENCHMARKS.md, with the exact commands.
#
# Usage: scripts/bench.sh [SUITE...]   (default: all of them, in this order)
#   floor       kpld-bench floor: MD5 of the key + KPL aggregate encoding, alone
#   throughput  max rate, 100-byte records, 1000 keys, 16 shards, count-only double;
#               then a fixed-size run with the double's log kept (exact PUT payload units)
#   latency     paced at half the max rate measured by `throughput` (or BENCH_MAX_RATE)
#   limits      the double enforces shard limits: goodput per shard, % throttled
#   memory      1/8/32/64 clients sending 5 MB requests into a 32 MiB budget: peak RSS
#   scaling     1/64/1024 shards, 1/16/256 connections, aggregation off
#   peers       one serve-fake double; kpld, aiokpl and boto3+aws-kinesis-agg against it
#   compression JSON log lines (--payload json-log, 200-1000 bytes) with the daemon's
#               compression none / gzip-1 / gzip-6 / zlib-6: records/s and daemon CPU per
#               record (count-only double, BENCH_DURATION s), bytes sent to Kinesis and exact
#               PUT payload units (BENCH_COMPRESSION_RECORDS records, the double's log kept),
#               compressing alone (kpld-bench floor), and a table with ratios to none
#               (compression.md).
# The client benchmark (Python and Node clients, aiokpl, boto3) is scripts/bench_clients.sh.
#
# Environment: BENCH_DURATION (s per run, default 10), BENCH_PEER_RECORDS (records for
# kpld and boto3, default 2000000), BENCH_AIOKPL_RECORDS (default 200000), BENCH_MAX_RATE
# (skip reading it from the throughput run), BENCH_COMPRESSION_RECORDS (default 1000000),
# BENCH_OUT (default .work/bench). Each run's output goes to $BENCH_OUT/NAME.txt.
# Builds the release binaries first. Background processes are stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"
trap stop_all_bg EXIT

OUT=${BENCH_OUT:-$ROOT/.work/bench}
DURATION=${BENCH_DURATION:-10}
PEER_RECORDS=${BENCH_PEER_RECORDS:-2000000}
COMPRESSION_RECORDS=${BENCH_COMPRESSION_RECORDS:-1000000}
AIOKPL_RECORDS=${BENCH_AIOKPL_RECORDS:-200000}
BENCH=$ROOT/target/release/kpld-bench
PEERS=$ROOT/scripts/bench_peers
mkdir -p "$OUT"

SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(floor throughput latency limits memory scaling peers compression)

# run NAME ARGS...: one kpld-bench run, output kept in $OUT/NAME.txt.
run() {
  local name=$1
  shift
  log "$name: kpld-bench $*"
  printf '$ kpld-bench %s\n' "$*" >"$OUT/$name.txt"
  "$BENCH" "$@" >>"$OUT/$name.txt" 2>&1 || log "$name: kpld-bench exited $? (see $OUT/$name.txt)"
  grep -E '^(throughput_records_per_s|throughput_steady|daemon_cpu_us|latency_p99_ms|verdict)' \
    "$OUT/$name.txt" | sed 's/^/    /' >&2 || true
}

# figure FILE NAME: the value of a `NAME: value` line.
figure() { sed -n "s/^$2: \([0-9.]*\).*/\1/p" "$1" | head -n1; }

machine() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "kernel: $(uname -sr)"
    echo "rustc: $(rustc --version)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  } >"$OUT/machine.txt"
  sed 's/^/    /' "$OUT/machine.txt" >&2
}

log "building release binaries"
cargo build --release -p kpld -p kpld-bench 2>&1 | tail -n 2 >&2
machine

# The figures of the headline load (100-byte records, 1000 keys, 16 shards).
BASE=(--record-size 100 --keys 1000 --shards 16)

for suite in "${SUITES[@]}"; do
  case $suite in
    floor)
      log "floor: kpld-bench floor"
      "$BENCH" floor --record-size 100 --keys 1000 | tee "$OUT/floor.txt" | sed 's/^/    /' >&2
      ;;
    throughput)
      run throughput "${BASE[@]}" --connections 4 --duration "$DURATION"
      run units "${BASE[@]}" --connections 4 --records 2000000 --keep-log --no-floor
      ;;
    latency)
      max=${BENCH_MAX_RATE:-$(figure "$OUT/throughput.txt" throughput_steady_records_per_s)}
      [ -n "$max" ] || die "no max rate: run the throughput suite first or set BENCH_MAX_RATE"
      half=$(awk -v m="$max" 'BEGIN { printf "%d", m / 2 }')
      run latency "${BASE[@]}" --connections 4 --duration "$DURATION" --rate "$half" --no-floor
      ;;
    limits)
      # 4 shards with the service's limits. Offered: 12,000 records/s per shard (more
      # than a shard takes: the shards set the pace) and 9,000 (about what fits), with
      # kpld's default rate_limit (150, a ceiling: throttled shards slow down), and
      # 12,000 with rate_limit = 100. The first 5 s (the buckets' initial burst) are
      # left out of the steady figures.
      LIM=(--record-size 100 --keys 1000 --shards 4 --connections 4 --limits --duration 20
        --warmup 5 --no-floor)
      run limits-rl150-48k "${LIM[@]}" --rate 48000
      run limits-rl150-36k "${LIM[@]}" --rate 36000
      run limits-rl100-48k "${LIM[@]}" --rate 48000 --rate-limit 100
      ;;
    memory)
      # Many clients with large requests waiting for room: a 32 MiB budget, 5 MB
      # requests (50 x 100,000 bytes), 16 shards with the service's limits (they set
      # the pace, so requests wait). Peak RSS should stay within the budget + 64 MiB
      # however many clients send (BENCHMARKS.md, "Memory").
      for c in 1 8 32 64; do
        run "memory-large-requests-$c" --record-size 100000 --batch 50 --connections "$c" \
          --shards 16 --limits --set max_buffered_bytes=33554432 --duration 5 --no-floor
        grep -E '^daemon_peak_rss_mib' "$OUT/memory-large-requests-$c.txt" | sed 's/^/    /' >&2 || true
      done
      ;;
    scaling)
      for s in 1 64 1024; do
        run "scaling-shards-$s" --record-size 100 --keys 1000 --shards "$s" --connections 4 \
          --duration "$DURATION" --no-floor
      done
      for c in 1 16 256; do
        run "scaling-connections-$c" "${BASE[@]}" --connections "$c" --duration "$DURATION" \
          --no-floor
      done
      run aggregation-off "${BASE[@]}" --connections 4 --duration "$DURATION" \
        --aggregation off --no-floor
      ;;
    peers)
      ensure_peer_venv aiokpl "$PEERS/requirements-aiokpl.txt"
      ensure_peer_venv boto3 "$PEERS/requirements-boto3.txt"
      start_bg serve-fake "$OUT/serve-fake.log" "$BENCH" serve-fake --shards 16
      for _ in $(seq 100); do
        grep -q '^endpoint: ' "$OUT/serve-fake.log" 2>/dev/null && break
        sleep 0.1
      done
      endpoint=$(sed -n 's/^endpoint: //p' "$OUT/serve-fake.log")
      [ -n "$endpoint" ] || die "serve-fake printed no endpoint: $(cat "$OUT/serve-fake.log")"
      log "peers: double at $endpoint"
      run peers-kpld "${BASE[@]}" --endpoint "$endpoint" --connections 4 \
        --records "$PEER_RECORDS" --rate-limit 100000 --no-floor
      for peer in aiokpl boto3; do
        script=$PEERS/aiokpl_peer.py n=$AIOKPL_RECORDS
        [ "$peer" = boto3 ] && script=$PEERS/boto3_agg_peer.py n=$PEER_RECORDS
        log "peers-$peer: $(basename "$script") --records $n"
        (cd "$PEERS" && "$ROOT/.work/bench-$peer/bin/python" "$script" --endpoint "$endpoint" \
          --records "$n" --record-size 100 --keys 1000) >"$OUT/peers-$peer.txt" 2>&1 ||
          log "peers-$peer failed (see $OUT/peers-$peer.txt)"
        grep -E '^(throughput_records_per_s|cpu_us_per_record)' "$OUT/peers-$peer.txt" |
          sed 's/^/    /' >&2 || true
      done
      stop_all_bg
      cat "$OUT/serve-fake.log" >"$OUT/peers-double.txt"
      ;;
    compression)
      # The same JSON log lines (seed 1) in every run; only the daemon's compression changes.
      JL=(--payload json-log --seed 1 --keys 1000 --shards 16 --connections 4 --no-floor)
      settings=(none gzip-1 gzip-6 zlib-6)
      for c in "${settings[@]}"; do
        comp=()
        [ "$c" = none ] || comp=(--compression "${c%-*}" --compression-level "${c#*-}")
        run "compression-$c" "${JL[@]}" --duration "$DURATION" "${comp[@]}"
        run "compression-$c-units" "${JL[@]}" --records "$COMPRESSION_RECORDS" --keep-log "${comp[@]}"
        if [ "$c" != none ]; then
          log "compression-$c-floor: kpld-bench floor --payload json-log --records 100000 ${comp[*]}"
          "$BENCH" floor --payload json-log --seed 1 --records 100000 "${comp[@]}" \
            >"$OUT/compression-$c-floor.txt" 2>&1 || log "compression-$c-floor failed"
        fi
      done
      {
        echo "| Setting | User records/s | Daemon CPU µs/record | Bytes to Kinesis per record | Bytes to Kinesis, $COMPRESSION_RECORDS records | PUT payload units per million records | Compress alone µs/record |"
        echo "|---|---|---|---|---|---|---|"
        base_rate=$(figure "$OUT/compression-none.txt" throughput_records_per_s)
        base_cpu=$(figure "$OUT/compression-none.txt" daemon_cpu_us_per_record)
        base_bytes=$(figure "$OUT/compression-none-units.txt" kinesis_bytes)
        base_units=$(figure "$OUT/compression-none-units.txt" put_payload_units_per_million_records)
        for c in "${settings[@]}"; do
          rate=$(figure "$OUT/compression-$c.txt" throughput_records_per_s)
          cpu=$(figure "$OUT/compression-$c.txt" daemon_cpu_us_per_record)
          bytes=$(figure "$OUT/compression-$c-units.txt" kinesis_bytes)
          per=$(figure "$OUT/compression-$c-units.txt" kinesis_bytes_per_user_record)
          units=$(figure "$OUT/compression-$c-units.txt" put_payload_units_per_million_records)
          alone=-
          [ "$c" = none ] || alone=$(awk -v n="$(figure "$OUT/compression-$c-floor.txt" \
            compress_fresh_encoder_ns_per_record)" 'BEGIN { printf "%.2f", n / 1000 }')
          awk -v c="$c" -v r="$rate" -v r0="$base_rate" -v u="$cpu" -v u0="$base_cpu" \
            -v p="$per" -v b="$bytes" -v b0="$base_bytes" -v n="$units" -v n0="$base_units" \
            -v a="$alone" 'BEGIN {
              printf "| %s | %d (%.2fx) | %.2f (%.2fx) | %.1f | %d (%.3fx) | %d (%.3fx) | %s |\n",
                c, r, r / r0, u, u / u0, p, b, b / b0, n, n / n0, a }'
        done
      } | tee "$OUT/compression.md" | sed 's/^/    /' >&2
      ;;
    *) die "unknown suite $suite (floor throughput latency limits scaling peers compression)" ;;
  esac
done
log "done: results in ${OUT#"$ROOT"/}"

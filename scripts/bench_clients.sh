#!/usr/bin/env bash
# scripts/bench_clients.sh: the client benchmark of issues 4 and 17 (a benchmark, not a test).
#
# Records per second ONE process hands over with a result for every record, 100-byte
# records over BENCH_CLIENT_KEYS keys, every result awaited, side by side in one run:
#
#   1. the Kinesis double (`kpld-bench serve-fake --shards 16`, count-only: not the
#      bottleneck) and a release kpld pointed at it: the kpld clients' batch forms (Python
#      put_batch, Node putBatch) and, for reference, their per-record forms, each with
#      BENCH_CLIENT_RECORDS records;
#   2. kinesalite (tests/tools, started like scripts/test.sh does) with a 16-shard stream and
#      a second kpld: the kpld Python client (put_records, then every future's result()), its
#      asyncio producer (every future awaited), boto3 put_records + aws-kinesis-agg, the
#      pure-Python producer aiokpl, the kpld Node client (putRecords) and the AWS SDK v3
#      PutRecordsCommand + npm aws-kinesis-agg (scripts/bench_peers/sdkv3_agg_peer.js), each
#      with BENCH_CLIENT_KINESALITE_RECORDS records.
#
# The ratios of issue 17 (Python vs boto3 and aiokpl, Node vs the SDK, asyncio vs threads,
# on kinesalite) follow the table.
#
# Per producer: records/s until the last result (the client's own clock), the client
# process's CPU per record (utime + stime: resource.getrusage / time.process_time /
# process.cpuUsage, over its timed section), and from /proc/PID/stat the CPU per record of
# kpld and of the Kinesis server over the producer's whole run, and how busy the whole
# machine was meanwhile (/proc/stat) and how many cores processes other than these three used
# (other developers' builds share the cores). A table goes to stdout and $OUT/table.md; raw
# outputs to $OUT/*.txt.
#
# Usage: scripts/bench_clients.sh
# Environment: BENCH_CLIENT_RECORDS (default 500000), BENCH_CLIENT_KINESALITE_RECORDS
#   (default 100000; 0 skips the kinesalite phase), BENCH_CLIENT_BATCH (records per put
#   call, default 1000), BENCH_CLIENT_KEYS (default 1000), BENCH_OUT (default
#   .work/bench/clients), BENCH_NO_BUILD=1 (use the release binaries as they are), PYTHON
#   (default python3).
# Background processes are started through lib.sh's start_bg and stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"
trap stop_all_bg EXIT

OUT=${BENCH_OUT:-$ROOT/.work/bench/clients}
N=${BENCH_CLIENT_RECORDS:-500000}
NK=${BENCH_CLIENT_KINESALITE_RECORDS:-100000}
BATCH=${BENCH_CLIENT_BATCH:-1000}
PY=${PYTHON:-python3}
BENCH=$ROOT/target/release/kpld-bench
KPLD=$ROOT/target/release/kpld
PEERS=$ROOT/scripts/bench_peers
STREAM=bench
SHARDS=16
KEYS=${BENCH_CLIENT_KEYS:-1000}
TCK=$(getconf CLK_TCK)
mkdir -p "$OUT"
rm -f "$OUT"/*.txt "$OUT/table.md" "$OUT/.times"

# cpu_ticks PID: utime + stime of a live process, in clock ticks (0 when it is gone).
cpu_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  # Fields after "(comm) ": state is field 3, utime 14, stime 15.
  s=${s##*) }
  awk '{ print $12 + $13 }' <<<"$s"
}

# machine_jiffies: "busy total" jiffies of all CPUs, from /proc/stat.
machine_jiffies() {
  awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# children_cpu VAR: sets VAR to the seconds of CPU (user + system) of this shell's finished
# children so far. `times` must run in this shell (not in a pipe or $(...), which fork).
children_cpu() {
  times >"$OUT/.times"
  printf -v "$1" '%s' "$(awk 'NR == 2 { t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/)
    t += a[1] * 60 + a[2] } print t }' "$OUT/.times")"
}

# per_record TICKS RECORDS: microseconds of CPU per record.
per_record() { awk -v t="$1" -v n="$2" -v hz="$TCK" 'BEGIN { printf "%.2f", t / hz * 1e6 / (n > 0 ? n : 1) }'; }

# start_kpld ENDPOINT NAME: a release kpld for ENDPOINT; sets KPLD_PID and SOCK.
start_kpld() {
  local endpoint=$1 name=$2 dir=$OUT/$2 i
  mkdir -p "$dir"
  SOCK=$dir/kpld.sock
  rm -f "$SOCK"
  cat >"$dir/kpld.toml" <<EOF
socket_path = "$SOCK"
region = "us-east-1"
kinesis_endpoint = "$endpoint"
aggregation_enabled = true
record_max_buffered_time_ms = 100
# Neither local server enforces shard limits, so kpld's limiter is lifted as in kpld-bench.
rate_limit = 100000
log_level = "warn"
# No CloudWatch upload (not on loopback), as in kpld-bench.
metrics_level = "none"
EOF
  start_bg "kpld ($name)" "$dir/kpld.log" env AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench \
    "$KPLD" --config "$dir/kpld.toml"
  KPLD_PID=$BG_PID
  for i in $(seq 1 300); do
    [ -S "$SOCK" ] && "$PY" -c 'import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])' \
      "$SOCK" 2>/dev/null && return 0
    kill -0 "$KPLD_PID" 2>/dev/null || die "kpld exited at start: $(cat "$dir/kpld.log")"
    sleep 0.1
  done
  die "kpld did not accept connections within 30 s: $(cat "$dir/kpld.log")"
}

# stop_kpld: SIGTERM (drain) and check the exit status.
stop_kpld() {
  local rc=0 i
  kill -TERM "$KPLD_PID" 2>/dev/null || true
  for i in $(seq 1 600); do
    kill -0 "$KPLD_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$KPLD_PID" 2>/dev/null && { log "kpld did not exit within 60 s of SIGTERM"; stop_pid "$KPLD_PID"; }
  wait "$KPLD_PID" || rc=$?
  [ "$rc" = 0 ] || log "kpld exited $rc"
}

ROWS=()
declare -A RATE

# run_producer KIND SERVER LABEL: runs one producer against $SOCK / $ENDPOINT with $RECORDS
# records, and adds a table row. KIND: python (futures), python-batch, python-aio, node
# (putRecords), node-batch, aiokpl, boto3, sdkv3.
run_producer() {
  local kind=$1 server=$2 label=$3 file k0 s0 k1 s1 m0 m1 c0 c1 t0 t1 rate cpu failed kcpu scpu
  local busy other rc=0
  file=$OUT/$server-$kind.txt
  log "$server: $label, $RECORDS records"
  k0=$(cpu_ticks "$KPLD_PID")
  s0=$(cpu_ticks "$SERVER_PID")
  m0=$(machine_jiffies)
  children_cpu c0
  t0=$(date +%s.%N)
  case $kind in
    python | python-batch | python-aio)
      local mode=futures
      [ "$kind" = python-batch ] && mode=batch
      [ "$kind" = python-aio ] && mode=aio
      "$PY" clients/python/bench.py --socket "$SOCK" --stream "$STREAM" --records "$RECORDS" \
        --batch "$BATCH" --size 100 --keys "$KEYS" --mode "$mode" >"$file" 2>&1 || rc=$?
      ;;
    node | node-batch)
      local mode=putRecords
      [ "$kind" = node-batch ] && mode=putBatch
      node clients/node/bench.js --socket "$SOCK" --stream "$STREAM" --records "$RECORDS" \
        --batch "$BATCH" --size 100 --keys "$KEYS" --mode "$mode" >"$file" 2>&1 || rc=$?
      ;;
    sdkv3)
      node scripts/bench_peers/sdkv3_agg_peer.js --endpoint "$ENDPOINT" --stream "$STREAM" \
        --records "$RECORDS" --record-size 100 --keys "$KEYS" >"$file" 2>&1 || rc=$?
      ;;
    aiokpl | boto3)
      local script=$PEERS/aiokpl_peer.py
      [ "$kind" = boto3 ] && script=$PEERS/boto3_agg_peer.py
      (cd "$PEERS" && "$ROOT/.work/bench-$kind/bin/python" "$script" --endpoint "$ENDPOINT" \
        --stream "$STREAM" --records "$RECORDS" --record-size 100 --keys "$KEYS") >"$file" 2>&1 ||
        rc=$?
      ;;
  esac
  k1=$(cpu_ticks "$KPLD_PID")
  s1=$(cpu_ticks "$SERVER_PID")
  m1=$(machine_jiffies)
  t1=$(date +%s.%N)
  children_cpu c1
  busy=$(awk -v a="$m0" -v b="$m1" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "%.0f", 100 * (y[1] - x[1]) / ((y[2] - x[2]) > 0 ? y[2] - x[2] : 1) }')
  # Cores the rest of the machine used meanwhile: busy time minus the producer process (all of
  # it, start-up included), kpld and the server.
  other=$(awk -v a="$m0" -v b="$m1" -v hz="$TCK" -v cc="$c0 $c1" -v k=$((k1 - k0 + s1 - s0)) \
    -v w0="$t0" -v w1="$t1" 'BEGIN { split(a, x, " "); split(b, y, " "); split(cc, z, " ");
      o = (y[1] - x[1]) / hz - (z[2] - z[1]) - k / hz; if (o < 0) o = 0;
      printf "%.2f", o / (w1 - w0) }')
  [ "$rc" = 0 ] || log "$label exited $rc (see ${file#"$ROOT"/})"
  case $kind in
    python*)
      rate=$(sed -n 's/^with results: *\([0-9,]*\) records.*/\1/p' "$file" | tr -d ,)
      cpu=$(sed -n 's/^client CPU: *\([0-9.]*\) us.*/\1/p' "$file")
      failed=$(sed -n 's/^with results:.*, \([0-9]*\) failed).*/\1/p' "$file")
      ;;
    node | node-batch)
      rate=$(sed -n 's/^ *records\/s *\([0-9]*\).*/\1/p' "$file")
      cpu=$(sed -n 's/^ *client CPU .* = \([0-9.]*\) us\/record.*/\1/p' "$file")
      failed=$(sed -n 's/^ *succeeded [0-9]*, failed \([0-9]*\).*/\1/p' "$file")
      ;;
    *)
      rate=$(sed -n 's/^throughput_records_per_s: //p' "$file")
      cpu=$(sed -n 's/^cpu_us_per_record: //p' "$file")
      failed=$(awk -F': ' '/^records_sent:/ { s = $2 } /^records_succeeded:/ { ok = $2 }
        END { if (s != "") print s - ok }' "$file")
      ;;
  esac
  if [[ $kind == python* || $kind == node* ]]; then
    kcpu=$(per_record $((k1 - k0)) "$RECORDS")
  else
    kcpu="-"
  fi
  scpu=$(per_record $((s1 - s0)) "$RECORDS")
  [ -n "$rate" ] || { rate="?"; failed="run failed"; }
  RATE[$server-$kind]=$rate
  ROWS+=("| $label | $server | $RECORDS | $rate | ${cpu:-?} | $kcpu | $scpu | ${failed:-?} | $busy | $other |")
  printf '    %s\n' "${ROWS[-1]}" >&2
}

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  log "building release binaries"
  cargo build --release -p kpld -p kpld-bench 2>&1 | tail -n 2 >&2
fi
[ -x "$KPLD" ] && [ -x "$BENCH" ] || die "no release build of kpld and kpld-bench"
npm_ci_if_needed "$ROOT/clients/node" # the SDK v3 peer uses its devDependencies
ensure_peer_venv aiokpl "$PEERS/requirements-aiokpl.txt"
ensure_peer_venv boto3 "$PEERS/requirements-boto3.txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "kernel: $(uname -sr)"
  echo "python: $("$PY" --version 2>&1)"
  echo "node: $(node --version)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
sed 's/^/    /' "$OUT/machine.txt" >&2

# ---- 1. the Kinesis double ----
start_bg serve-fake "$OUT/double.log" "$BENCH" serve-fake --shards "$SHARDS" --stream "$STREAM"
SERVER_PID=$BG_PID
for _ in $(seq 100); do
  grep -q '^endpoint: ' "$OUT/double.log" 2>/dev/null && break
  sleep 0.1
done
ENDPOINT=$(sed -n 's/^endpoint: //p' "$OUT/double.log")
[ -n "$ENDPOINT" ] || die "serve-fake printed no endpoint: $(cat "$OUT/double.log")"
start_kpld "$ENDPOINT" kpld-double
RECORDS=$N
run_producer python-batch double "kpld Python client, put_batch"
run_producer node-batch double "kpld Node client, putBatch"
run_producer python double "kpld Python client, put_records + result() each"
run_producer python-aio double "kpld Python asyncio client, put_records + await each"
run_producer node double "kpld Node client, putRecords"
stop_kpld
stop_pid "$SERVER_PID"

# ---- 2. kinesalite, for reference ----
if [ "$NK" -gt 0 ]; then
  npm_ci_if_needed "$TOOLS"
  ensure_venv
  start_kinesalite "$OUT" || die "kinesalite did not start"
  SERVER_PID=$KINESALITE_PID
  ENDPOINT=$KINESALITE_URL
  "$VENV/bin/python" - "$ENDPOINT" "$STREAM" "$SHARDS" <<'EOF'
import sys

import boto3

c = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench")
c.create_stream(StreamName=sys.argv[2], ShardCount=int(sys.argv[3]))
c.get_waiter("stream_exists").wait(StreamName=sys.argv[2], WaiterConfig={"Delay": 1, "MaxAttempts": 60})
EOF
  start_kpld "$ENDPOINT" kpld-kinesalite
  RECORDS=$NK
  run_producer python kinesalite "kpld Python client, put_records + result() each"
  run_producer python-aio kinesalite "kpld Python asyncio client, put_records + await each"
  run_producer boto3 kinesalite "boto3 put_records + aws-kinesis-agg"
  run_producer aiokpl kinesalite "aiokpl 0.2.0, put_record"
  run_producer node kinesalite "kpld Node client, putRecords"
  run_producer sdkv3 kinesalite "AWS SDK v3 PutRecordsCommand + aws-kinesis-agg"
  stop_kpld
fi
stop_all_bg
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

{
  echo "| Producer | Server | Records | Records/s with results | Client CPU µs/record | kpld CPU µs/record | Server CPU µs/record | Failed | Machine busy % | Other load (cores) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/table.md"

# ratio A B: RATE[A] / RATE[B] as "1.23x" ("?" when either is missing).
ratio() {
  awk -v a="${RATE[$1]:-}" -v b="${RATE[$2]:-}" 'BEGIN {
    if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else printf "?" }'
}
{
  echo
  echo "Ratios (records/s with results):"
  if [ "$NK" -gt 0 ]; then
    echo "- kinesalite: kpld Python / boto3 + aws-kinesis-agg: $(ratio kinesalite-python kinesalite-boto3) (target >= 2x)"
    echo "- kinesalite: kpld Python / aiokpl: $(ratio kinesalite-python kinesalite-aiokpl) (target >= 50x)"
    echo "- kinesalite: kpld Node / AWS SDK v3 + aws-kinesis-agg: $(ratio kinesalite-node kinesalite-sdkv3) (target >= 2x)"
    echo "- kinesalite: kpld Python asyncio / threaded: $(ratio kinesalite-python-aio kinesalite-python) (target >= 0.67x)"
  fi
  echo "- double: kpld Python put_batch: ${RATE[double-python-batch]:-?} records/s (target >= 1,000,000)"
  echo "- double: kpld Node putBatch: ${RATE[double-node-batch]:-?} records/s (target >= 1,500,000)"
  echo "- double: kpld Python asyncio / threaded: $(ratio double-python-aio double-python)"
} | tee -a "$OUT/table.md"
log "done: raw outputs in ${OUT#"$ROOT"/}"

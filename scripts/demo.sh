#!/usr/bin/env bash
# scripts/demo.sh: kpld end to end on this machine, no AWS account needed.
#
# Builds kpld (debug build: the quickest first build; `cargo build --release` for speed),
# starts kinesalite (an in-memory Kinesis) on a loopback port, creates a 4-shard stream,
# starts kpld with a temporary config, puts records through the Python client, reads every
# shard back with GetRecords, deaggregates with aws-kinesis-agg and checks every record is
# on the shard kpld predicted. Then stops everything it started, by PID.
#
# Usage: scripts/demo.sh [RECORD_COUNT]   (default 1000)
# Needs: cargo, python3 (with venv), node + npm. First run downloads crates and packages.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"

COUNT=${1:-1000}
SHARDS=4
STREAM=kpld-demo-$(date +%s)
TMP=$(mktemp -d /tmp/kpld-demo.XXXXXX)
KPLD_PID=

cleanup() {
  local rc=$?
  stop_all_bg
  if [ $rc -ne 0 ]; then
    for f in "$TMP"/kpld.log "$TMP"/kinesalite.log; do
      [ -s "$f" ] && { echo "----- $(basename "$f") (last 50 lines) -----" >&2; tail -n 50 "$f" >&2; }
    done
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building kpld (debug build)"
cargo build --quiet -p kpld --bin kpld
KPLD_BIN=$ROOT/target/debug/kpld

log "installing the demo's Python and npm packages (first run only)"
npm_ci_if_needed "$TOOLS"
ensure_venv
"$VENV/bin/python" -c 'import kpld' 2>/dev/null || die "the Python client (clients/python) is not installed"

start_kinesalite "$TMP"
"$VENV/bin/python" "$ROOT/scripts/demo.py" create "$KINESALITE_URL" "$STREAM" "$SHARDS"

cat >"$TMP/kpld.toml" <<EOF
socket_path = "$TMP/kpld.sock"
region = "us-east-1"
kinesis_endpoint = "$KINESALITE_URL"
record_max_buffered_time_ms = 100
# No CloudWatch upload: the demo talks to the local server only.
metrics_level = "none"
EOF
log "starting kpld with $TMP/kpld.toml:"
sed 's/^/    /' "$TMP/kpld.toml" >&2
# Local servers accept any static credentials.
start_bg kpld "$TMP/kpld.log" env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  "$KPLD_BIN" --config "$TMP/kpld.toml"
KPLD_PID=$BG_PID
ready=0
for _ in $(seq 1 300); do
  kill -0 "$KPLD_PID" 2>/dev/null || die "kpld exited at start"
  if "$VENV/bin/python" -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' \
    "$TMP/kpld.sock" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
[ $ready -eq 1 ] || die "kpld's socket did not accept connections within 30 s"

"$VENV/bin/python" "$ROOT/scripts/demo.py" run "$KINESALITE_URL" "$STREAM" "$TMP/kpld.sock" "$COUNT"

log "stopping kpld (SIGTERM)"
kill -TERM "$KPLD_PID"
rc=0
wait "$KPLD_PID" || rc=$?
[ $rc -eq 0 ] || die "kpld exited with $rc after SIGTERM"
log "kpld exited 0; demo done"

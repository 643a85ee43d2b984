#!/usr/bin/env bash
# scripts/demo.sh: kpld end to end on this machine, no AWS account needed.
#
# Builds kpld (debug build: the quickest first build; `cargo build --release` for speed),
# starts `kpld local` (the daemon plus an embedded in-memory Kinesis endpoint on a loopback
# port; the stream is created with 4 shards on first use), puts records through the Python
# client, reads every shard back with boto3 GetRecords, deaggregates with aws-kinesis-agg and
# checks every record is on the shard kpld predicted, then shows the first records as
# `kpld tail` prints them. Stops what it started, by PID.
#
# Usage: scripts/demo.sh [RECORD_COUNT]   (default 1000)
# Needs: cargo, python3 (with venv). First run downloads crates and packages.
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
    for f in "$TMP"/kpld.log; do
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

log "installing the demo's Python packages (first run only)"
ensure_venv
"$VENV/bin/python" -c 'import kpld' 2>/dev/null || die "the Python client (clients/python) is not installed"

PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ENDPOINT=http://127.0.0.1:$PORT
log "starting: kpld local --socket $TMP/kpld.sock --port $PORT --shards $SHARDS"
start_bg kpld "$TMP/kpld.log" "$KPLD_BIN" local --socket "$TMP/kpld.sock" --port "$PORT" --shards "$SHARDS"
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
sed 's/^/    /' "$TMP/kpld.log" >&2

"$VENV/bin/python" "$ROOT/scripts/demo.py" run "$ENDPOINT" "$STREAM" "$TMP/kpld.sock" "$COUNT"

log "the first 3 records as kpld tail shows them: $KPLD_BIN tail $STREAM --endpoint $ENDPOINT --count 3"
"$KPLD_BIN" tail "$STREAM" --endpoint "$ENDPOINT" --count 3 | sed 's/^/    /'

log "stopping kpld (SIGTERM)"
kill -TERM "$KPLD_PID"
rc=0
wait "$KPLD_PID" || rc=$?
[ $rc -eq 0 ] || die "kpld exited with $rc after SIGTERM"
log "kpld exited 0; demo done"

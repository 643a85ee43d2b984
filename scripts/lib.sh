# scripts/lib.sh: shared shell helpers for scripts/test.sh, demo.sh, bench.sh and
# bench_clients.sh (sourced, not run).
#
# Invariants:
# - every background process is started through `start_bg`, which records its PID in
#   BG_PIDS; `stop_all_bg` (installed as the EXIT trap by the caller) stops exactly those
#   PIDs, TERM first, KILL after a grace period. Nothing is ever killed by name.
# - installs are idempotent: a stamp file holding a hash of the inputs (lockfile,
#   requirements, client sources) is written after a successful install; a matching stamp
#   skips the install, so a second run costs milliseconds.
# - servers listen on 127.0.0.1 (kinesis-local also binds 0.0.0.0; it has no setting).

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
VENV=${VENV:-$ROOT/.venv}
TOOLS=$ROOT/tests/tools
BG_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Hash of the given files' contents and names (sorted), for install stamps.
hash_files() {
  local f
  for f in "$@"; do
    [ -f "$f" ] && { printf '%s\n' "$f"; cat "$f"; }
  done | sha256sum | cut -d' ' -f1
}

# Hash of every source file of a directory (skipping build output and caches).
hash_tree() {
  local dir=$1
  # shellcheck disable=SC2046
  hash_files $(cd "$ROOT" && find "$dir" -type f \
    -not -path '*/node_modules/*' -not -path '*/__pycache__/*' -not -path '*/build/*' \
    -not -path '*/dist/*' -not -path '*.egg-info/*' -not -path '*/.pytest_cache/*' \
    -not -name '*.pyc' | LC_ALL=C sort | sed "s|^|$ROOT/|")
}

# npm_ci_if_needed DIR: `npm ci` in DIR unless node_modules matches package-lock.json.
npm_ci_if_needed() {
  local dir=$1 stamp want
  [ -f "$dir/package-lock.json" ] || die "$dir/package-lock.json is missing (commit the lockfile)"
  stamp=$dir/node_modules/.kpld-install-stamp
  want=$(hash_files "$dir/package.json" "$dir/package-lock.json")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "npm ci in ${dir#"$ROOT"/}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed in $dir"
  printf '%s\n' "$want" >"$stamp"
}

# ensure_venv: .venv with tests/requirements.txt and the Python client (if present).
ensure_venv() {
  local stamp want
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
  fi
  stamp=$VENV/.kpld-requirements-stamp
  want=$(hash_files "$ROOT/tests/requirements.txt")
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "pip install -r tests/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r "$ROOT/tests/requirements.txt" || die "pip install -r tests/requirements.txt failed"
    printf '%s\n' "$want" >"$stamp"
  fi
  if [ -f "$ROOT/clients/python/pyproject.toml" ] || [ -f "$ROOT/clients/python/setup.py" ]; then
    stamp=$VENV/.kpld-client-stamp
    want=$(hash_tree clients/python)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
      log "pip install ./clients/python"
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --force-reinstall --no-deps "$ROOT/clients/python" \
        || die "pip install ./clients/python failed"
      # Its own dependencies (without --force-reinstall, so pinned test deps stay).
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "$ROOT/clients/python" || die "pip install ./clients/python failed"
      printf '%s\n' "$want" >"$stamp"
    fi
  else
    log "clients/python has no pyproject.toml yet: the Python client is not installed"
  fi
}

# ensure_peer_venv NAME REQUIREMENTS: .work/bench-NAME with exactly those packages (the
# benchmarks' peer producers, each in its own virtualenv: aiokpl pins an old botocore).
ensure_peer_venv() {
  local venv=$ROOT/.work/bench-$1 req=$2 stamp want
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || die "python3 -m venv failed"
  stamp=$venv/.kpld-bench-stamp
  want=$(hash_files "$req")
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing $1 peer into ${venv#"$ROOT"/}"
    "$venv/bin/pip" install -q -r "$req" || die "pip install -r $req failed"
    printf '%s\n' "$want" >"$stamp"
  fi
}

# free_port: prints a TCP port that is free on every interface right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1]); s.close()'
}

# start_bg NAME LOGFILE CMD...: runs CMD in the background, output to LOGFILE; sets BG_PID.
start_bg() {
  local name=$1 logfile=$2
  shift 2
  "$@" >"$logfile" 2>&1 </dev/null &
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
  log "started $name (pid $BG_PID, log ${logfile#"$ROOT"/})"
}

# stop_pid PID: TERM, wait up to 10 s, then KILL. Only ever the given PID.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "pid $pid did not stop after SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_all_bg() {
  local i
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${BG_PIDS[$i]}"
  done
  BG_PIDS=()
}

# wait_kinesis NAME URL PID LOG: waits until a Kinesis API at URL answers ListStreams
# (up to 120 s), failing early if PID exits.
wait_kinesis() {
  local name=$1 url=$2 pid=$3 logfile=$4 i
  for i in $(seq 1 240); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited before answering; its log:"
      cat "$logfile" >&2 || true
      return 1
    fi
    if "$VENV/bin/python" "$ROOT/scripts/kinesis_ready.py" "$url" 2>/dev/null; then
      log "$name answers at $url"
      return 0
    fi
    sleep 0.5
  done
  log "$name did not answer at $url within 120 s; its log:"
  cat "$logfile" >&2 || true
  return 1
}

# start_kinesalite DIR: sets KINESALITE_URL.
start_kinesalite() {
  local dir=$1 port
  port=$(free_port)
  start_bg kinesalite "$dir/kinesalite.log" node "$TOOLS/kinesalite.js" "$port"
  KINESALITE_PID=$BG_PID
  KINESALITE_LOG=$dir/kinesalite.log
  KINESALITE_URL=http://127.0.0.1:$port
  wait_kinesis kinesalite "$KINESALITE_URL" "$KINESALITE_PID" "$KINESALITE_LOG"
}

# start_kinesis_local DIR: sets KINESIS_LOCAL_URL. State changes take 10 ms so that
# create/split/merge tests do not wait.
start_kinesis_local() {
  local dir=$1 port tls_port
  port=$(free_port)
  tls_port=$(free_port)
  while [ "$tls_port" = "$port" ]; do tls_port=$(free_port); done
  start_bg kinesis-local "$dir/kinesis-local.log" env \
    KINESIS_MOCK_CERT_PATH="$TOOLS/node_modules/kinesis-local/server.json" \
    KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT="$tls_port" \
    CREATE_STREAM_DURATION=10ms DELETE_STREAM_DURATION=10ms \
    SPLIT_SHARD_DURATION=10ms MERGE_SHARDS_DURATION=10ms UPDATE_SHARD_COUNT_DURATION=10ms \
    SHARD_LIMIT=1000 LOG_LEVEL=WARN \
    node "$TOOLS/node_modules/kinesis-local/main.js"
  KINESIS_LOCAL_PID=$BG_PID
  KINESIS_LOCAL_LOG=$dir/kinesis-local.log
  KINESIS_LOCAL_URL=http://127.0.0.1:$port
  wait_kinesis kinesis-local "$KINESIS_LOCAL_URL" "$KINESIS_LOCAL_PID" "$KINESIS_LOCAL_LOG"
}

# start_moto DIR: moto_server (CloudWatch and friends) on loopback; sets MOTO_URL.
start_moto() {
  local dir=$1 port i
  port=$(free_port)
  start_bg moto_server "$dir/moto.log" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
  MOTO_PID=$BG_PID
  MOTO_URL=http://127.0.0.1:$port
  for i in $(seq 1 240); do
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      log "moto_server exited before answering; its log:"
      cat "$dir/moto.log" >&2 || true
      return 1
    fi
    if "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=2)' \
      "$MOTO_URL" 2>/dev/null; then
      log "moto_server answers at $MOTO_URL"
      return 0
    fi
    sleep 0.5
  done
  log "moto_server did not answer at $MOTO_URL within 120 s; its log:"
  cat "$dir/moto.log" >&2 || true
  return 1
}

#!/usr/bin/env bash
# scripts/test.sh: runs every test of the repository; CI runs exactly this (.ci/run).
#
# Steps (each one is reported in the summary at the end; the script exits non-zero if
# any step failed):
#   1. install what is missing (idempotent, skipped when already up to date):
#      npm ci in tests/tools (kinesalite, kinesis-local), .venv with tests/requirements.txt
#      and ./clients/python, npm ci in clients/node (if it exists)
#   2. cargo fmt --check, cargo clippy -D warnings, cargo build (every package of the workspace);
#      the fuzz smoke: each libFuzzer target of fuzz/ for KPLD_FUZZ_SMOKE_S seconds (default 5)
#      from its seed corpus (scripts/fuzz.sh smoke; builds on stable, in fuzz/target)
#   3. start kinesalite, kinesis-local and moto_server (CloudWatch) on free loopback ports
#      (stopped by PID on exit)
#   4. cargo test --workspace, pytest tests/integration, pytest clients/python/tests, node --test in
#      clients/node, then the code blocks of the READMEs (tests/integration/test_readme.py); the
#      summary counts passed and skipped tests per step, and under CI=true any skipped test not
#      named in .ci/expected-skips fails the run
#
# Environment for step 4 (also what a developer sets to run one test by hand):
#   KPLD_BIN                          the daemon binary (target/debug/kpld)
#   KPLD_TEST_KINESIS_ENDPOINT        kinesalite URL (fast, in memory)
#   KPLD_TEST_KINESIS_MOCK_ENDPOINT   kinesis-local URL (slow, full API: split/merge)
#   KPLD_TEST_MOTO_ENDPOINT           moto_server URL (CloudWatch PutMetricData and reads)
#   AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
#
# Options: pass extra pytest arguments after `--`, e.g. `scripts/test.sh -- -k round_trip -x`.
# KPLD_TEST_SKIP_RUST=1 skips step 2 except `cargo build` (for iterating on Python/Node tests).
# KPLD_TEST_STEP_TIMEOUT_S (default 1200) bounds each test step: a hung test fails its step.
# Logs of the servers: .work/test/*.log (printed when a step fails).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
cd "$ROOT"

PYTEST_ARGS=()
if [ "${1:-}" = "--" ]; then
  shift
  PYTEST_ARGS=("$@")
elif [ $# -gt 0 ]; then
  die "usage: scripts/test.sh [-- PYTEST_ARGS...]"
fi

WORK=$ROOT/.work/test
mkdir -p "$WORK"
rm -f "$WORK"/*.log

STEP_NAMES=()
STEP_RESULTS=()
FAILED=0
START_TIME=$SECONDS

record() { # record NAME RESULT
  STEP_NAMES+=("$1")
  STEP_RESULTS+=("$2")
  case $2 in PASS* | SKIP* | "NO TESTS"*) ;; *) FAILED=1 ;; esac
}

# run_step NAME CMD...: runs CMD, records PASS/FAIL with the time it took.
run_step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  log "=== $name: $*"
  "$@" || rc=$?
  if [ $rc -eq 0 ]; then
    record "$name" "PASS ($((SECONDS - t0)) s)"
  else
    record "$name" "FAIL (exit $rc, $((SECONDS - t0)) s)"
  fi
  return $rc
}

# count_step NAME KIND REPORT: adds "N passed, M skipped" to NAME's summary line (KIND is
# junit, tap or cargo; see scripts/test_counts.py). Under CI every skipped test must be listed
# by name in .ci/expected-skips, or the step "NAME: skips" fails naming it: a suite must never
# pass by skipping.
TOTAL_SKIPPED=0
count_step() {
  local name=$1 kind=$2 report=$3 counts i unexpected=()
  if ! counts=$("$VENV/bin/python" "$ROOT/scripts/test_counts.py" "$kind" "$report"); then
    record "$name: counts" "FAIL (no readable $kind report at ${report#"$ROOT"/})"
    return
  fi
  local head passed skipped
  head=$(head -n1 <<<"$counts")
  passed=$(sed -E 's/.*passed=([0-9]+).*/\1/' <<<"$head")
  skipped=$(sed -E 's/.*skipped=([0-9]+).*/\1/' <<<"$head")
  TOTAL_SKIPPED=$((TOTAL_SKIPPED + skipped))
  for i in "${!STEP_NAMES[@]}"; do
    if [ "${STEP_NAMES[$i]}" = "$name" ]; then
      STEP_RESULTS[i]="${STEP_RESULTS[$i]}: $passed passed, $skipped skipped"
    fi
  done
  [ "${CI:-}" = true ] || return 0
  while IFS= read -r line; do
    local test=${line#skip }
    grep -qxF "$test" <(sed -E 's/[[:space:]]*#.*//; /^$/d' "$ROOT/.ci/expected-skips") ||
      unexpected+=("$test")
  done < <(grep '^skip ' <<<"$counts" || true)
  if [ ${#unexpected[@]} -gt 0 ]; then
    record "$name: skips" "FAIL (not in .ci/expected-skips: ${unexpected[*]})"
  fi
}

print_summary() {
  local i
  echo
  echo "================================ kpld test summary ================================"
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-44s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"
  done
  echo "  skipped tests: $TOTAL_SKIPPED (under CI only those in .ci/expected-skips may skip)"
  echo "  total time: $((SECONDS - START_TIME)) s, $(df -Ph "$ROOT" | awk 'NR==2 {print $4}') left on disk"
  if [ $FAILED -eq 0 ]; then
    echo "  RESULT: ALL PASSED"
  else
    echo "  RESULT: FAILED"
  fi
  echo "==================================================================================="
}

print_server_logs() {
  local f
  for f in "$WORK"/kinesalite.log "$WORK"/kinesis-local.log "$WORK"/moto.log; do
    [ -s "$f" ] || continue
    echo "----- ${f#"$ROOT"/} (last 100 lines) -----"
    tail -n 100 "$f"
  done
}

on_exit() {
  local rc=$?
  stop_all_bg
  if [ $rc -ne 0 ] && [ $FAILED -eq 0 ]; then
    record "test.sh itself" "FAIL (exit $rc)"
  fi
  if [ $FAILED -ne 0 ]; then
    print_server_logs
  fi
  print_summary
  if [ $FAILED -ne 0 ]; then exit 1; fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. install ---------------------------------------------------------------------------
t0=$SECONDS
npm_ci_if_needed "$TOOLS"
ensure_venv
HAVE_NODE_CLIENT=0
if [ -f "$ROOT/clients/node/package.json" ]; then
  HAVE_NODE_CLIENT=1
  if [ -f "$ROOT/clients/node/package-lock.json" ]; then
    npm_ci_if_needed "$ROOT/clients/node"
  else
    record "npm ci clients/node" "FAIL (clients/node/package-lock.json missing)"
  fi
fi
record "install (npm ci, venv, clients)" "PASS ($((SECONDS - t0)) s)"

# ---- 2. Rust checks and build ----------------------------------------------------------------------------
if [ "${KPLD_TEST_SKIP_RUST:-0}" != 1 ]; then
  run_step "cargo fmt --check" cargo fmt --all -- --check || true
  run_step "cargo clippy -D warnings" cargo clippy --all-targets --workspace -- -D warnings || true
else
  record "cargo fmt/clippy/test" "SKIP (KPLD_TEST_SKIP_RUST=1)"
fi
BUILD_OK=1
run_step "cargo build" cargo build --workspace || BUILD_OK=0

# The fuzz targets (issue 13) build on any toolchain (no nightly, see scripts/fuzz.sh) but
# need a C++ compiler for libFuzzer itself; .ci/run installs one, so under CI its absence
# fails the step instead of skipping it.
if command -v c++ >/dev/null || command -v g++ >/dev/null; then
  run_step "fuzz smoke (scripts/fuzz.sh smoke)" \
    scripts/fuzz.sh smoke "${KPLD_FUZZ_SMOKE_S:-5}" || true
elif [ "${CI:-}" = true ]; then
  record "fuzz smoke" "FAIL (no C++ compiler (c++/g++): libFuzzer cannot be built)"
else
  record "fuzz smoke" "SKIP (no C++ compiler (c++/g++) to build libFuzzer; apt-get install g++)"
fi

# ---- 3. servers ---------------------------------------------------------------------------
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
unset AWS_SESSION_TOKEN AWS_PROFILE || true
export AWS_EC2_METADATA_DISABLED=true
export KPLD_BIN=$ROOT/target/debug/kpld

SERVERS_OK=1
t0=$SECONDS
if start_kinesalite "$WORK" && start_kinesis_local "$WORK" && start_moto "$WORK"; then
  record "start kinesalite, kinesis-local, moto" "PASS ($((SECONDS - t0)) s)"
else
  SERVERS_OK=0
  record "start kinesalite, kinesis-local, moto" "FAIL"
fi
export KPLD_TEST_KINESIS_ENDPOINT=${KINESALITE_URL:-}
export KPLD_TEST_KINESIS_MOCK_ENDPOINT=${KINESIS_LOCAL_URL:-}
export KPLD_TEST_MOTO_ENDPOINT=${MOTO_URL:-}

# ---- 4. tests: Rust (unit + integration; may use the servers), Python, Node --------------------
# Each test step is killed after this many seconds (CI has 90 minutes for everything;
# the slowest step, the integration tests, takes 3-7 minutes).
STEP_TIMEOUT_S=${KPLD_TEST_STEP_TIMEOUT_S:-1200}
if [ "${KPLD_TEST_SKIP_RUST:-0}" != 1 ]; then
  run_step "cargo test" timeout --kill-after=30 "$STEP_TIMEOUT_S" \
    bash -c 'set -o pipefail; cargo test --workspace 2>&1 | tee "$1"' _ "$WORK/cargo-test.log" || true
  count_step "cargo test" cargo "$WORK/cargo-test.log"
fi

PYTEST_RAN=0    # suites that ran at least one test
PYTEST_SUITES=()
run_pytest() { # run_pytest NAME DIR [PYTEST ARGS...]
  local name=$1 dir=$2 rc=0 t0=$SECONDS
  shift 2
  log "=== $name: pytest $dir"
  # Bounded: a test that hangs (a result that never comes) fails the suite
  # after STEP_TIMEOUT_S instead of holding CI until its own limit.
  local junit=$WORK/junit-${dir//\//-}.xml
  rm -f "$junit"
  timeout --kill-after=30 "$STEP_TIMEOUT_S" \
    "$VENV/bin/python" -m pytest "$dir" "$@" -ra -p no:cacheprovider --junitxml="$junit" \
    ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"} || rc=$?
  PYTEST_SUITES+=("$name")
  case $rc in
    0) PYTEST_RAN=1; record "$name" "PASS ($((SECONDS - t0)) s)" ;;
    5) record "$name" "NO TESTS (pytest exit 5: nothing collected)" ;;
    124 | 137) PYTEST_RAN=1; record "$name" "FAIL (timed out after $STEP_TIMEOUT_S s)" ;;
    *) PYTEST_RAN=1; record "$name" "FAIL (pytest exit $rc, $((SECONDS - t0)) s)" ;;
  esac
  [ $rc -eq 5 ] || count_step "$name" junit "$junit"
}

if [ $BUILD_OK -eq 1 ] && [ $SERVERS_OK -eq 1 ]; then
  # The README blocks are a step of their own (below): they include a release build.
  run_pytest "pytest tests/integration" tests/integration --ignore=tests/integration/test_readme.py
  if [ -d "$ROOT/clients/python/tests" ]; then
    run_pytest "pytest clients/python/tests" clients/python/tests
  else
    record "pytest clients/python/tests" "SKIP (clients/python/tests does not exist)"
  fi
  if [ ${#PYTEST_SUITES[@]} -gt 0 ] && [ $PYTEST_RAN -eq 0 ]; then
    record "pytest: some test ran" "FAIL (no test was collected in any suite)"
  fi
  if [ $HAVE_NODE_CLIENT -eq 1 ]; then
    rm -f "$WORK/node.tap"
    run_step "node --test clients/node" timeout --kill-after=30 "$STEP_TIMEOUT_S" \
      bash -c 'cd "$1" && node --test --test-reporter=spec --test-reporter-destination=stdout \
        --test-reporter=tap --test-reporter-destination="$2"' _ "$ROOT/clients/node" "$WORK/node.tap" || true
    count_step "node --test clients/node" tap "$WORK/node.tap"
  else
    record "node --test clients/node" "SKIP (clients/node/package.json does not exist)"
  fi
  # Every code block of README.md and the clients' READMEs, run as written; the install
  # block's `cargo build --release` makes it the longest step (about 8 minutes from nothing).
  run_pytest "pytest README blocks" tests/integration/test_readme.py
else
  record "integration and client tests" "FAIL (not run: build or servers failed)"
fi

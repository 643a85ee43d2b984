#!/usr/bin/env bash
# scripts/fuzz.sh: builds and runs kpld's libFuzzer targets (fuzz/, issue 13).
#
#   scripts/fuzz.sh build                  build every target (release, fuzz/target)
#   scripts/fuzz.sh smoke [SECONDS]        each target SECONDS (default 5) from its seed
#                                          corpus; exits non-zero on any crash (CI runs this)
#   scripts/fuzz.sh long SECONDS [TARGET...]
#                                          each target (default: all, concurrently, under
#                                          nice -n 19) SECONDS, keeping what it finds in
#                                          .work/fuzz/corpus/TARGET; logs in .work/fuzz/TARGET.log
#   scripts/fuzz.sh run TARGET [LIBFUZZER ARGS...]
#                                          one target by hand, e.g. a crash file to reproduce
#   scripts/fuzz.sh list                   the targets
#
# Targets (fuzz/fuzz_targets/): `frames` (bytes a client writes to the socket -> frame
# reader -> protobuf decoding -> validation -> results, through the real connection
# handler and Producer against an in-process Kinesis fake), `config` (TOML text plus
# KPLD_* variables -> validated Config), `aggregate` (records -> KPL aggregate ->
# decoded back equal; arbitrary bytes into the decoder).
#
# Stable Rust is enough: rather than `cargo fuzz` (which wants nightly for its -Z
# flags), this passes rustc the SanitizerCoverage flags libFuzzer needs (all stable
# -C options) and builds with plain cargo. No AddressSanitizer (that one is -Z only):
# kpld denies unsafe code, and debug assertions and overflow checks are on. With a
# nightly toolchain `cargo +nightly fuzz run TARGET` works as well (fuzz/Cargo.toml has
# cargo-fuzz's metadata) and adds ASan.
#
# A crash leaves its input in .work/fuzz/artifacts/TARGET/; reproduce it with
# `scripts/fuzz.sh run TARGET .work/fuzz/artifacts/TARGET/crash-...`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ=$ROOT/fuzz
WORK=$ROOT/.work/fuzz
TARGETS=(frames config aggregate)
HOST=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${KPLD_FUZZ_TARGET_DIR:-$FUZZ/target}
BIN_DIR=${KPLD_FUZZ_BIN_DIR:-$CARGO_TARGET_DIR/$HOST/release}
mkdir -p "$WORK"

log() { printf '[%s] fuzz: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The flags cargo-fuzz gives rustc, less the -Z ones. Given with an explicit --target,
# RUSTFLAGS reach only the target's crates, not build scripts and proc macros.
sancov_flags() {
  local f=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-sanitizer-coverage-stack-depth
    --cfg fuzzing
  )
  echo "${f[*]}"
}

build() {
  log "building ${TARGETS[*]} ($(rustc --version), target dir ${CARGO_TARGET_DIR#"$ROOT"/})"
  local t0=$SECONDS
  # Not --locked: fuzz/Cargo.lock pins what it holds, and a dependency kpld gained since
  # it was written is added to it instead of failing the build (cargo then writes it).
  (cd "$FUZZ" && RUSTFLAGS="$(sancov_flags)" cargo build --release --target "$HOST" --bins)
  log "built in $((SECONDS - t0)) s"
}

check_target() {
  local t
  for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
  die "unknown target '$1' (targets: ${TARGETS[*]})"
}

# run_one TARGET SECONDS CORPUS_DIR [LIBFUZZER ARGS...]: fuzzes TARGET for SECONDS, new
# inputs into CORPUS_DIR, the seed corpus read too; prints libFuzzer's final stats.
run_one() {
  local t=$1 secs=$2 corpus=$3
  shift 3
  mkdir -p "$corpus" "$WORK/artifacts/$t"
  "$BIN_DIR/$t" "$corpus" "$FUZZ/corpus/$t" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$WORK/artifacts/$t/" -print_final_stats=1 "$@"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  build) build ;;
  list) printf '%s\n' "${TARGETS[@]}" ;;
  smoke)
    secs=${1:-5}
    build
    rc=0
    for t in "${TARGETS[@]}"; do
      log "=== $t: ${secs} s"
      # A fresh corpus each run: the repository's seeds are read, never written.
      rm -rf "$WORK/smoke/$t"
      if ! run_one "$t" "$secs" "$WORK/smoke/$t" >"$WORK/$t.smoke.log" 2>&1; then
        rc=1
        log "$t FAILED; its log:"
        tail -n 60 "$WORK/$t.smoke.log" >&2
      else
        log "$t: $(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$WORK/$t.smoke.log" | tail -n1)"
      fi
    done
    exit $rc
    ;;
  long)
    secs=${1:?usage: scripts/fuzz.sh long SECONDS [TARGET...]}
    shift
    [ $# -gt 0 ] || set -- "${TARGETS[@]}"
    for t in "$@"; do check_target "$t"; done
    build
    # Fork mode starts its workers from the binary's path: run copies, so that a rebuild
    # meanwhile (a fix being tried) does not change the binary under a running campaign.
    mkdir -p "$WORK/bin"
    for t in "$@"; do cp "$BIN_DIR/$t" "$WORK/bin/$t"; done
    export KPLD_FUZZ_BIN_DIR=$WORK/bin
    pids=()
    for t in "$@"; do
      log "$t: $secs s under nice -n 19, log .work/fuzz/$t.log"
      # Fork mode: a crash is saved and fuzzing goes on, so one long run finds them all.
      nice -n 19 "${BASH_SOURCE[0]}" _one "$t" "$secs" "$WORK/corpus/$t" \
        -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 >"$WORK/$t.log" 2>&1 &
      pids+=($!)
    done
    rc=0
    for i in "${!pids[@]}"; do
      if ! wait "${pids[$i]}"; then
        rc=1
        log "target $(($i + 1)) of $# FAILED: see .work/fuzz/*.log and .work/fuzz/artifacts/"
      fi
    done
    for t in "$@"; do
      log "$t: $(grep -E '^#[0-9]+' "$WORK/$t.log" | tail -n1)"
      log "$t: $(find "$WORK/artifacts/$t" -type f | wc -l) crash/timeout/oom inputs in .work/fuzz/artifacts/$t"
    done
    exit $rc
    ;;
  _one) run_one "$@" ;; # internal: one target of `long`, already built
  run)
    t=${1:?usage: scripts/fuzz.sh run TARGET [LIBFUZZER ARGS...]}
    shift
    check_target "$t"
    build
    mkdir -p "$WORK/artifacts/$t"
    exec "$BIN_DIR/$t" -artifact_prefix="$WORK/artifacts/$t/" "$@"
    ;;
  *) sed -n '2,28p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
esac

#!/bin/bash
# Instructions per line of each case of process-bench, counted by valgrind's
# callgrind: unlike times, they do not change with the machine's load.
# Build first: cargo build --release --manifest-path scripts/process-bench/Cargo.toml
set -eu
# instructions per line of each case: callgrind's Ir for the case minus a run of no case, / (5 * lines)
B=${CARGO_TARGET_DIR:-$(dirname "$0")/target}/release/process-bench
L=20000
ir() { BENCH_LINES=$L valgrind --tool=callgrind --callgrind-out-file=/dev/null "$B" "$1" 2>&1 >/dev/null | sed -n 's/.*Collected : //p'; }
base=$(ir nomatch)
for c in "none" "single_line" "csv_to_json" "common_apache" "combined_apache" "apache_error" "syslog" "rfc5424" "cri F" "key random" "key random_stream" "key line_hash" "key path" "key json_field"; do
  n=$(ir "$c"); echo "$c: $(( (n - base) / (5 * L) )) instructions/line"
done

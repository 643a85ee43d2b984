#!/usr/bin/env bash
# scripts/static-build.sh: builds kpld as ONE statically linked Linux executable (no dynamic
# loader, no shared library: runs on Alpine, distroless/static, scratch images and in an empty
# chroot). This is the binary CI tests in tests/integration/test_static_chroot.py and the one
# docs/Dockerfile copies.
#
#   scripts/static-build.sh            release build (what ships)
#   scripts/static-build.sh --debug    debug profile (faster to build; for trying things out)
#
# Prints the path of the binary as the last line of stdout:
#   target/static/x86_64-unknown-linux-gnu/release/kpld
#
# How: glibc's static libc (`-C target-feature=+crt-static`) on the gnu target, because the
# musl target cannot be installed on machines without rustup access. `--target` is given
# explicitly so that RUSTFLAGS apply to kpld and its dependencies only, not to build scripts
# and proc macros (which must stay dynamic). Its own target dir (target/static): the flags
# differ from the normal build, sharing target/debug would rebuild everything twice.
#
# Caveat of static glibc (see docs/operations.md, "What holds in an empty chroot"): ld warns
# that getaddrinfo "requires at runtime the shared libraries from the glibc version used for
# linking" (cargo does not show linker warnings). That concerns NSS plugins only: glibc 2.36
# has the files and dns sources built in, so numeric endpoints, /etc/hosts names and DNS work
# with no shared library (tests/integration/test_static_chroot.py shows all three).
#
# Other targets, on machines that have them installed (same flags, see docs/operations.md):
#   rustup target add x86_64-unknown-linux-musl && \
#     cargo build --release --locked --target x86_64-unknown-linux-musl
#   KPLD_STATIC_TARGET=aarch64-unknown-linux-gnu scripts/static-build.sh   (needs a cross linker:
#     CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PROFILE_ARGS=(--release)
PROFILE_DIR=release
case "${1:-}" in
  "") ;;
  --debug) PROFILE_ARGS=(); PROFILE_DIR=debug ;;
  *) echo "usage: scripts/static-build.sh [--debug]" >&2; exit 2 ;;
esac

TARGET=${KPLD_STATIC_TARGET:-x86_64-unknown-linux-gnu}
export CARGO_TARGET_DIR=${KPLD_STATIC_TARGET_DIR:-$ROOT/target/static}
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"

echo "static-build: cargo build ${PROFILE_ARGS[*]} --locked --target $TARGET (RUSTFLAGS=$RUSTFLAGS, CARGO_TARGET_DIR=${CARGO_TARGET_DIR#"$ROOT"/})" >&2
cargo build "${PROFILE_ARGS[@]}" --locked --target "$TARGET" -p kpld --bin kpld >&2

BIN=$CARGO_TARGET_DIR/$TARGET/$PROFILE_DIR/kpld
[ -x "$BIN" ] || { echo "static-build: $BIN was not produced" >&2; exit 1; }

# Prove it is static: no program interpreter (dynamic loader) and no needed shared library.
if command -v readelf >/dev/null; then
  if readelf -lW "$BIN" | grep -q 'Requesting program interpreter'; then
    echo "static-build: $BIN asks for a dynamic loader:" >&2
    readelf -lW "$BIN" | grep -A1 INTERP >&2
    exit 1
  fi
  if readelf -dW "$BIN" | grep -q '(NEEDED)'; then
    echo "static-build: $BIN needs shared libraries:" >&2
    readelf -dW "$BIN" | grep '(NEEDED)' >&2
    exit 1
  fi
  echo "static-build: $BIN: no INTERP header, no NEEDED library (static)" >&2
else
  echo "static-build: readelf not found; skipped the static check (tests check it too)" >&2
fi
echo "$BIN"

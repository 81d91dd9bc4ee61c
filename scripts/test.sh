#!/usr/bin/env bash
# Runs Vigie's whole test suite: formatting, lints, layering rules, unit and
# integration tests (real RocksDB, real QUIC on loopback, real journal files,
# real kill -9) and short fuzz runs. Installs what a fresh Debian machine lacks.
#
# Environment:
#   CARGO_TARGET_DIR   build directory (default: a per-user cache, so repeated runs stay warm)
#   VIGIE_FUZZ_SECONDS seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vigie/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
FUZZ_SECONDS="${VIGIE_FUZZ_SECONDS:-20}"
SUITE_START=$(date +%s)

step() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "==> $name"
  "$@"
  echo "<== $name: $(( $(date +%s) - t0 ))s"
}

bash scripts/prereqs.sh

step "format" cargo fmt --all -- --check
step "layering" bash scripts/layering.sh
step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "tests" cargo test --workspace --locked --exclude vigie-bench
if [ "$FUZZ_SECONDS" != "0" ]; then
  step "fuzz (${FUZZ_SECONDS}s per target)" bash scripts/fuzz.sh "$FUZZ_SECONDS"
fi
echo "all steps passed in $(( $(date +%s) - SUITE_START ))s"

#!/usr/bin/env bash
# Runs every fuzz target for a short time (CI) or a long one (before a release:
# `bash scripts/fuzz.sh 3600`). Needs the nightly toolchain and cargo-fuzz
# (installed from crates.io when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
rustup run nightly rustc --version >/dev/null || { echo "the nightly toolchain is needed for fuzzing (rustup toolchain install nightly)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/fuzz"
cd fuzz
for t in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$t"
  if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t"/ 2>/dev/null || true; fi
  echo "fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 3
  test "${PIPESTATUS[0]}" -eq 0
done

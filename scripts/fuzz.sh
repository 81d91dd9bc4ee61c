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
  log="$(mktemp)"
  if ! cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -v -E '^\s+(at |[0-9]+: )' "$log" | tail -n 40
    echo "fuzz target $t failed; the input is in fuzz/artifacts/$t/ (reproduce: cd fuzz && cargo +nightly fuzz run $t fuzz/artifacts/$t/<file>)" >&2
    rm -f "$log"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || tail -n 2 "$log"
  rm -f "$log"
done

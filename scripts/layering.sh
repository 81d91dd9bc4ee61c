#!/usr/bin/env bash
# Enforces the workspace's layering rules (see ARCHITECTURE.md, "Invariants").
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
deps() {
  local out
  if ! out=$(cargo tree --locked -e normal -p "$1" --prefix none --format '{p}' 2>&1); then
    echo "layering: cargo tree failed for $1: $out" >&2
    exit 1
  fi
  awk '{print $1}' <<<"$out" | sort -u
}
forbid() { # crate, forbidden dependency...
  local crate="$1"; shift
  local list; list=$(deps "$crate") || exit 1
  for bad in "$@"; do
    if grep -qx "$bad" <<<"$list"; then
      echo "layering: $crate must not depend on $bad"; fail=1
    fi
  done
}
forbid vigie-proto tokio quinn rocksdb librocksdb-sys vigie-store vigie-net
forbid vigie-rules tokio quinn rocksdb librocksdb-sys vigie-store vigie-net
forbid vigie-ebpf tokio quinn rocksdb librocksdb-sys
forbid vigie-agent rocksdb librocksdb-sys vigie-store
forbid vigie-spool tokio quinn rocksdb librocksdb-sys
forbid vigie-net rocksdb librocksdb-sys vigie-store
forbid vigie-pve vigie-store rocksdb librocksdb-sys vigie-collector vigie-agent
forbid vigie-dashboard vigie-store rocksdb librocksdb-sys
# Only the collector opens the event store.
for c in $(cargo metadata --locked --format-version 1 --no-deps | python3 -c 'import json,sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))'); do
  case "$c" in vigie-collector|vigie-store|vigie|vigie-bench) continue ;; esac
  list=$(deps "$c") || exit 1
  if grep -qx vigie-store <<<"$list"; then echo "layering: $c must not depend on vigie-store (only the collector opens the event store)"; fail=1; fi
done
# Every crate says what it owns in a //! doc.
for lib in */src/lib.rs cli/src/main.rs; do
  head -1 "$lib" | grep -q '^//!' || { echo "layering: $lib must start with a //! doc saying what the crate owns and never does"; fail=1; }
done
[ $fail -eq 0 ] && echo "layering rules hold"
exit $fail

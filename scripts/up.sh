#!/usr/bin/env bash
# Builds Vigie (release) and runs `vigie up`: collector, status page and a local
# agent watching this machine, under one data directory. Arguments go to `vigie up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo build --release --locked -p vigie -p vigie-agent
exec "${CARGO_TARGET_DIR:-target}/release/vigie" up "$@"

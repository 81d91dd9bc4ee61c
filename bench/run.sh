#!/bin/sh
# Builds the benchmarks and the `vigie` binary in release mode, then runs P1, P5, P4 and P6
# with their default sizes, appending each result block to bench/RESULTS.md.
#
#   bench/run.sh            full sizes (about 12 minutes on 2 cores)
#   bench/run.sh --quick    reduced sizes (about 4 minutes), for a smoke run
#
# Everything runs on loopback; every process started is killed when its benchmark ends.
# rsyslog (Debian package `rsyslog`) is the peer of P4 and P5; without it they run with --no-peer.
set -eu
cd "$(dirname "$0")/.."

cargo build --release -p vigie-bench -p vigie
bin=target/release

quick=0
[ "${1:-}" = "--quick" ] && quick=1

peer=""
if ! [ -x /usr/sbin/rsyslogd ]; then
    echo "rsyslogd not found (apt-get install rsyslog): running without the peer" >&2
    peer="--no-peer"
fi

if [ "$quick" = 1 ]; then
    note="--note=reduced size (bench/run.sh --quick)"
    "$bin/p1-ingest" --events 1000000 --runs 3 "$note"
    "$bin/p1-ingest" --events 1000000 --runs 3 --verify-only "$note"
    "$bin/p5-ship" --size-mib 256 --runs 3 $peer "$note"
    "$bin/p4-footprint" --duration-secs 20 --runs 3 $peer "$note"
    "$bin/p6-burst" --duration-secs 20 --runs 3 "$note"
else
    "$bin/p1-ingest"
    "$bin/p1-ingest" --verify-only
    "$bin/p5-ship" $peer
    "$bin/p4-footprint" $peer
    "$bin/p6-burst"
fi

#!/usr/bin/env bash
# Full-count reliability runs: R1 (kill -9 the collector 50 times during a 1M-line stream),
# R2 (kill -9 the agent 50 times), R3 (10 partitions of 60 s through a network namespace),
# R5 (disk full under the agent's spool, then under the collector's store) and R7 (an old
# copy of the agent's data directory restored) — cli/tests/reliability.rs with VIGIE_FULL=1,
# in release mode, one scenario at a time. Appends a dated summary to bench/RESULTS.md.
#
#   bench/reliability.sh                 every scenario (about 25 minutes on 2 cores)
#   bench/reliability.sh r3_ r5_         only the scenarios whose test names contain r3_ or r5_
#   VIGIE_SEED=N bench/reliability.sh    replay the random kill moments of an earlier run
#
# Needs root (tmpfs mounts, network namespaces). Every process, mount and namespace a
# scenario creates is removed when it ends, also on failure.
set -uo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)

VIGIE_FULL=1 cargo test --release -p vigie --test reliability \
    -- --test-threads=1 --nocapture "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
minutes=$(( ($(date +%s) - t0 + 59) / 60 ))

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then commit="$commit + uncommitted changes"; fi
outcome="passed"
[ "$status" -ne 0 ] && outcome="FAILED (exit $status)"

{
    echo
    echo "## Reliability, full counts — $started"
    echo
    echo "\`bench/reliability.sh${*:+ $*}\` (VIGIE_FULL=1, release, one scenario at a time): **$outcome**"
    echo "in $minutes min; commit $commit; $(nproc) cores, $(uname -r)."
    echo
    echo "| scenario | produced | stored | duplicates | lost | details |"
    echo "| --- | --- | --- | --- | --- | --- |"
    grep '^RELIABILITY ' "$log" | awk '{
        row = ""; details = "";
        split("", kv);
        for (i = 3; i <= NF; i++) {
            eq = index($i, "=");
            k = substr($i, 1, eq - 1); v = substr($i, eq + 1);
            if (k == "produced" || k == "stored" || k == "duplicates" || k == "lost") kv[k] = v;
            else details = details (details == "" ? "" : " ") $i;
        }
        printf "| %s | %s | %s | %s | %s | %s |\n", $2, kv["produced"], kv["stored"], kv["duplicates"], kv["lost"], details;
    }'
    failures=$(grep -E '^test .* FAILED$|panicked at' "$log" | head -20)
    if [ -n "$failures" ]; then
        echo
        echo "Failures:"
        echo
        echo '```'
        echo "$failures"
        grep -A3 'panicked at' "$log" | grep -v 'panicked at' | head -40
        echo '```'
    fi
} >> bench/RESULTS.md

echo "summary appended to bench/RESULTS.md ($outcome)"
exit "$status"

#!/usr/bin/env bash
# `make test` N times in a row with a CPU hog on each core (normal priority), to show that no
# test depends on the host being quiet (ARCHITECTURE decision 58). Prints a line per run and
# `N passed, N failed`; the logs are in $OUT (default /tmp/vtbulk-loaded-test).
#
#   scripts/loaded-test.sh          # 5 runs
#   RUNS=2 scripts/loaded-test.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${RUNS:-5}"
out="${OUT:-/tmp/vtbulk-loaded-test}"
mkdir -p "$out"
hogs=()
for _ in $(seq "$(nproc)"); do sh -c 'while :; do :; done' & hogs+=("$!"); done
trap 'kill "${hogs[@]}" 2>/dev/null; wait "${hogs[@]}" 2>/dev/null' EXIT
passed=0 failed=0
for i in $(seq "$runs"); do
    start=$(date +%s)
    if make test > "$out/run-$i.log" 2>&1; then
        passed=$((passed + 1)); result=green
    else
        failed=$((failed + 1)); result="FAILED (see $out/run-$i.log)"
    fi
    echo "run $i: $result in $(( $(date +%s) - start )) s, with $(nproc) CPU hogs"
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]

#!/usr/bin/env bash
# Coverage-guided fuzzing of vtbulk's parsers (cargo-fuzz, libFuzzer; a nightly toolchain):
# every input reader behind the real entry point (read_input), URL/domain/IP parsing and
# refanging (indicator), VirusTotal's answers and error bodies (vt_answer), the cache's file
# checks (store_file), the configuration file and every value parser (config). Each target
# starts from its committed seeds (fuzz/seeds/<target>) and runs RUNS executions; prints
# executions, coverage and crashes per target, and fails on a crash (its input is left in
# fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh                  # RUNS=1000000 each
#   RUNS=20000 scripts/fuzz.sh       # the short run CI does
#   TARGETS="indicator" RUNS=5000000 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
runs="${RUNS:-1000000}"
targets="${TARGETS:-read_input indicator vt_answer store_file config}"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: cargo-fuzz needs a nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
for t in $targets; do cargo +nightly fuzz build -O "$t"; done
failed=0
printf '%-12s %12s %8s %8s %8s %s\n' target executions cov ft crashes seconds
for t in $targets; do
    mkdir -p "corpus/$t"
    start=$(date +%s)
    log=$(mktemp)
    if cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$runs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        crashes=0
    else
        crashes=1
        failed=1
        tail -40 "$log" >&2
    fi
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
    printf '%-12s %12s %8s %8s %8s %s\n' "$t" "$execs" "$cov" "$ft" "$crashes" "$(( $(date +%s) - start ))"
    rm -f "$log"
done
exit "$failed"

#!/usr/bin/env bash
# Peak memory of a whole vtbulk run over 10 million unique hashes.
#
#   benches/memory_10m.sh        (N=10000000 by default)
#
# Looking 10M hashes up takes minutes even against a local mock, and what grows with the
# input is the read+dedup table and the record stream, not the (bounded) lookups. So the run
# is made against vt-mock with a key the mock refuses: the first 401 stops the lookups, and
# all 10M unique hashes still go through reading, dedup, the cache check (a fresh cache file
# of its own, so the user's is not touched) and one `skipped` record each to the output
# file. GNU time reports the peak RSS.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${N:-10000000}"
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
"$root/target/release/vt-mock" hashes --count "$n" --mix md5,sha1,sha256 --list-seed 9 > "$work/in.txt"
"$root/target/release/vt-mock" --port 0 > "$work/url" 2>/dev/null &
pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
VT_API_KEY=refused /usr/bin/time -f "wall=%e s cpu=%U+%S s maxrss=%M KB" \
    "$root/target/release/vtbulk" enrich "$work/in.txt" --api-url "$(head -1 "$work/url")" \
    --tier unlimited -q -o "$work/out.csv" --summary-json "$work/summary.json" \
    --cache "$work/cache.sqlite3" || true
python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print('unique', s['unique'], 'skipped', s['skipped'], 'outcome', s['outcome'])" "$work/summary.json"
echo "input: $(du -h "$work/in.txt" | cut -f1), output: $(du -h "$work/out.csv" | cut -f1)"

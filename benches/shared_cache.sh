#!/usr/bin/env bash
# Two runs sharing one cache file on overlapping lists (issue 16): what they pay together.
#
# A list of N hashes (10% unknown to the mock, mixed md5/sha1/sha256) is cut into two runs'
# lists that share OVERLAP lines: A takes the first (N+OVERLAP)/2, B the last (N+OVERLAP)/2,
# so A meets the common part at its end and B at its start (SHAPE=front: both lists start
# with it, so both reach each common hash at about the same moment). Both start together on one
# fresh cache file, against vt-mock at LATENCY, with --rate unlimited and 64 in flight.
# Prints, per build and round: the requests the mock saw against the unique hashes, the
# lookups asked more than once, each run's wall time, cache hits, answers taken from the
# other run (`shared_answers`) and waits (`claims_waited`).
#
#   benches/shared_cache.sh                      # N=9000 OVERLAP=3000 LATENCY=20ms ROUNDS=3
#   BEFORE=/path/to/old/vtbulk benches/shared_cache.sh   # the same rounds with another build
#   NO_BUILD=1 LATENCY=lognormal:median=100ms,p99=800ms SHAPE=front benches/shared_cache.sh
#
# Raw output: benches/out/shared-cache-<time>/.
set -euo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${N:-9000}" overlap="${OVERLAP:-3000}" latency="${LATENCY:-20ms}" rounds="${ROUNDS:-3}"
out="$root/benches/out/shared-cache-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
bin="$root/target/release"
builds=("current=$bin/vtbulk")
[ -z "${BEFORE:-}" ] || builds+=("before=$BEFORE")

pid=""
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi' EXIT
"$bin/vt-mock" --port 0 --latency "$latency" > "$out/url" 2> "$out/mock.log" &
pid=$!
for _ in $(seq 100); do [ -s "$out/url" ] && break; sleep 0.05; done
url=$(head -1 "$out/url")

"$bin/vt-mock" hashes --count "$n" --unknown 0.1 --mix md5,sha1,sha256 --list-seed 16 > "$out/all.txt"
half=$(( (n + overlap) / 2 ))
if [ "${SHAPE:-tail}" = front ]; then
    rest=$(( half - overlap ))
    { head -n "$overlap" "$out/all.txt"; sed -n "$((overlap + 1)),$((overlap + rest))p" "$out/all.txt"; } > "$out/a.txt"
    { head -n "$overlap" "$out/all.txt"; tail -n "$rest" "$out/all.txt"; } > "$out/b.txt"
else
    head -n "$half" "$out/all.txt" > "$out/a.txt"
    tail -n "$half" "$out/all.txt" > "$out/b.txt"
fi

# run BUILD BIN LIST NAME CACHE: one enrich in the background
run() {
    local bin="$2" list="$3" name="$4" cache="$5"
    VT_API_KEY=testkey "$bin" enrich "$list" --api-url "$url" --tier unlimited \
        --rate unlimited --concurrency 64 --cache "$cache" --format ndjson --quiet \
        -o "$out/$name.ndjson" --summary-json "$out/$name.json"
}

echo "build round unique requests asked_twice a_s b_s a_hits b_hits shared_answers claims_waited"
for round in $(seq "$rounds"); do
    for build in "${builds[@]}"; do
        label="${build%%=*}" exe="${build#*=}"
        rm -rf "$out/cache"*
        curl -s -X POST "$url/_mock/reset" > /dev/null
        t0=$(date +%s.%N)
        ( run "$label" "$exe" "$out/a.txt" "$label-$round-a" "$out/cache.sqlite3"; date +%s.%N > "$out/a.end" ) &
        ra=$!
        ( run "$label" "$exe" "$out/b.txt" "$label-$round-b" "$out/cache.sqlite3"; date +%s.%N > "$out/b.end" ) &
        rb=$!
        wait "$ra" "$rb"
        curl -s "$url/_mock/stats?log=0" > "$out/stats-$label-$round.json"
        python3 - "$out" "$label" "$round" "$t0" <<'PY'
import json, sys
out, label, rnd, t0 = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
stats = json.load(open(f"{out}/stats-{label}-{rnd}.json"))
unique = len({l.strip().lower() for l in open(f"{out}/all.txt") if l.strip()})
by_id = stats["by_id"]
asked = sum(by_id.values())
twice = sum(1 for v in by_id.values() if v > 1)
a = json.load(open(f"{out}/{label}-{rnd}-a.json"))
b = json.load(open(f"{out}/{label}-{rnd}-b.json"))
ta = float(open(f"{out}/a.end").read()) - t0
tb = float(open(f"{out}/b.end").read()) - t0
shared = a.get("shared_answers", 0) + b.get("shared_answers", 0)
waited = a.get("claims_waited", 0) + b.get("claims_waited", 0)
print(f"{label} {rnd} {unique} {asked} {twice} {ta:.2f} {tb:.2f} {a['cache_hits']} {b['cache_hits']} {shared} {waited}")
PY
    done
done | tee "$out/table.txt"

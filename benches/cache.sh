#!/usr/bin/env bash
# The cache's two figures, against vt-mock on loopback (zero latency, unlimited key).
#
#   benches/cache.sh                    # N=1000000 for the re-run, M=100000 for on/off, ROUNDS=3
#   N=0 benches/cache.sh                # skip the re-run part
#   CACHE_ARGS="--cache-answers summary" benches/cache.sh   # extra flags for every run
#   BEFORE=/path/to/old/vtbulk benches/cache.sh   # and, after each cache-on run, the same
#                                                 # run with another build (an A/B of a change)
#
# 1. A fully cached re-run: N unique hashes (mixed md5/sha1/sha256, 10% unknown) are looked
#    up once to fill a fresh cache, then enriched again: records/s to the output file (wall
#    time from exec to exit), and the requests vt-mock saw during the re-run (must be 0).
# 2. Cache writes against the pipeline: M unique hashes enriched with --cache off and with a
#    fresh cache file, alternately, ROUNDS times: requests/s of each, and the ratio.
# 3. The same at a realistic 50 ms mock latency (L=5000 unique hashes, 64 in flight).
# Raw output: benches/out/cache-<time>/.
set -euo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${N:-1000000}"
m="${M:-100000}"
rounds="${ROUNDS:-3}"
out="$root/benches/out/cache-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
work="$(mktemp -d)"
pid=""
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
bin="$root/target/release"

"$bin/vt-mock" --port 0 > "$work/url" 2>/dev/null &
pid=$!
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
url="$(head -1 "$work/url")"
requests() { curl -s "$url/_mock/stats?log=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
reset() { curl -s -X POST "$url/_mock/reset" > /dev/null; }

# run LABEL INPUT CACHE: one enrich to a file; prints a RESULT line
run() {
    local label="$1" input="$2" cache="$3" t0 t1
    reset
    t0=$(date +%s.%N)
    VT_API_KEY=testkey /usr/bin/time -f "%e %U %S %M" -o "$out/$label.time" \
        "${EXE:-$bin/vtbulk}" enrich "$input" --api-url "$url" --tier unlimited --concurrency 64 \
        --format csv --progress never -q -o "$out/$label.csv" --cache "$cache" \
        --summary-json "$out/$label.summary.json" ${CACHE_ARGS:-}
    t1=$(date +%s.%N)
    python3 - "$label" "$out/$label.summary.json" "$out/$label.time" "$t0" "$t1" "$(requests)" <<'PY'
import json, sys
label, summary, timing, t0, t1, mock_requests = sys.argv[1:]
s = json.load(open(summary))
wall, user, sys_, rss = open(timing).read().split()
secs = float(t1) - float(t0)
records = s["unique"] + s["invalid"]
print(f"RESULT {label} unique={s['unique']} records={records} secs={secs:.2f} "
      f"records_per_sec={records/secs:.0f} requests={s['requests']} rps={s['requests']/secs:.0f} "
      f"mock_requests={mock_requests} cache_hits={s['cache_hits']} cache_writes={s['cache_writes']} "
      f"cpu={float(user)+float(sys_):.2f} maxrss_mb={int(rss)//1024}")
PY
}

if [ "$n" -gt 0 ]; then
    "$bin/vt-mock" hashes --count "$n" --unknown 0.1 --mix md5,sha1,sha256 --list-seed 21 > "$work/n.txt"
    run fill "$work/n.txt" "$work/rerun.sqlite3" | tee -a "$out/results.txt"
    du -sb "$work"/rerun.sqlite3* | awk '{print "cache bytes:", $1, $2}' | tee -a "$out/results.txt"
    run rerun "$work/n.txt" "$work/rerun.sqlite3" | tee -a "$out/results.txt"
    rm -rf "$work"/rerun.sqlite3*
fi

"$bin/vt-mock" hashes --count "$m" --unknown 0.1 --mix md5,sha1,sha256 --list-seed 22 > "$work/m.txt"
for r in $(seq "$rounds"); do
    run "off-r$r" "$work/m.txt" off | tee -a "$out/results.txt"
    run "on-r$r" "$work/m.txt" "$work/on-$r.sqlite3" | tee -a "$out/results.txt"
    rm -rf "$work/on-$r".sqlite3*
    if [ -n "${BEFORE:-}" ]; then
        EXE="$BEFORE" run "before-r$r" "$work/m.txt" "$work/on-$r.sqlite3" | tee -a "$out/results.txt"
        rm -rf "$work/on-$r".sqlite3*
    fi
done
kill "$pid" 2>/dev/null || true
"$bin/vt-mock" --port 0 --latency 50ms > "$work/url50" 2>/dev/null &
pid=$!
for _ in $(seq 100); do [ -s "$work/url50" ] && break; sleep 0.05; done
url="$(head -1 "$work/url50")"
"$bin/vt-mock" hashes --count "${L:-5000}" --unknown 0.1 --mix md5,sha1,sha256 --list-seed 23 > "$work/l.txt"
for r in $(seq "$rounds"); do
    run "off50-r$r" "$work/l.txt" off | tee -a "$out/results.txt"
    run "on50-r$r" "$work/l.txt" "$work/on50-$r.sqlite3" | tee -a "$out/results.txt"
    rm -rf "$work/on50-$r".sqlite3*
    if [ -n "${BEFORE:-}" ]; then
        EXE="$BEFORE" run "before50-r$r" "$work/l.txt" "$work/on50-$r.sqlite3" | tee -a "$out/results.txt"
        rm -rf "$work/on50-$r".sqlite3*
    fi
done
echo "raw output: $out"

#!/usr/bin/env bash
# vtbulk against the peers of ../shared/bench, on the shared nginx mock, in one run.
#
#   benches/peers.sh                  # scenarios A, B, Q; ROUNDS=3
#   SCENARIOS="A" ROUNDS=1 benches/peers.sh
#
# A: 100k lines (90,000 unique), zero latency, 64 in flight: wrk (the raw HTTP ceiling),
#    vt-py (gather + semaphore), vtbulk on a 1-thread and a 2-thread runtime.
#    vtbulk's figure is whole-process: requests / wall time from exec to exit (reading,
#    dedup, lookups, writing NDJSON to a file), with --cache off: the peers keep nothing, and
#    with the cache every round after the first would be answered without a request.
# B: 5k lines (4,500 unique), 50 ms mock latency, 64 in flight: wrk and vtbulk; the bound is
#    64 / 0.05 s = 1,280 requests/s.
# Q: the mock limited to 600/min per key (limit_req, nodelay, burst 0: one request per
#    100 ms), 500 unique hashes, vtbulk --rate 600/min: wall time against the ideal 49.9 s,
#    and the 429s (vtbulk's count and the mock's access log).
# The shared bench is copied to $WORK (default /tmp/vtbulk-peers) and set up there once
# (apt, a venv with vt-py, npm), as its README says. Raw output: benches/out/peers-<time>/.
set -euo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${SHARED_BENCH:-$root/../shared/bench}"
work="${WORK:-/tmp/vtbulk-peers}"
rounds="${ROUNDS:-3}"
scenarios="${SCENARIOS:-A B Q}"
out="$root/benches/out/peers-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export no_proxy="127.0.0.1,localhost" NO_PROXY="127.0.0.1,localhost"

if [ ! -x "$work/.venv/bin/python" ]; then
    rm -rf "$work"; cp -r "$shared" "$work"; chmod -R u+w "$work"
    "$work/setup.sh" > "$out/setup.log" 2>&1
fi
py="$work/.venv/bin/python"
cargo build --release -q -p vtbulk --manifest-path "$root/Cargo.toml"
vtbulk="$root/target/release/vtbulk"

mock_pid=""
cleanup() { if [ -n "$mock_pid" ]; then "$work/mock/stop.sh" "$mock_pid" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

start_mock() { # port latency rate
    mock_pid="$("$work/mock/start.sh" "$1" "$2" "$3" 2>/dev/null)"
}
stop_mock() { "$work/mock/stop.sh" "$mock_pid" "$@" >/dev/null 2>&1 || true; mock_pid=""; }

# vtbulk label url input extra-args... ; prints a RESULT line like the peers'
run_vtbulk() {
    local label="$1" url="$2" input="$3"; shift 3
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f "%e %U %S %M" -o "$out/$label.time" env VT_API_KEY=testkey "$vtbulk" enrich "$input" \
        --api-url "$url" --format ndjson --progress never -q -o "$out/$label.ndjson" \
        --summary-json "$out/$label.summary.json" --cache off "$@" || true
    t1=$(date +%s.%N)
    python3 - "$label" "$out/$label.summary.json" "$out/$label.time" "$t0" "$t1" <<'PY'
import json, sys
label, summary, timing, t0, t1 = sys.argv[1:]
s = json.load(open(summary))
wall, user, sys_, rss = open(timing).read().split()
secs = float(t1) - float(t0)
print(f"RESULT tool={label} n={s['unique']} ok={s['ok']} notfound={s['not_found']} err={s['errors']} "
      f"skipped={s['skipped']} secs={secs:.2f} rps={s['requests']/secs:.1f} requests={s['requests']} "
      f"429s={s['rate_limited']} cpu={float(user)+float(sys_):.2f} maxrss_mb={int(rss)//1024}")
PY
}

if [[ " $scenarios " == *" A "* ]]; then
    "$py" "$work/gen_hashes.py" 100000 0.1 "$out/a.txt" --seed 1 >/dev/null
    for r in $(seq "$rounds"); do
        start_mock 18480 0 0
        url=http://127.0.0.1:18480
        echo "A r$r: $("$work/peers/wrk_peer.sh" --url "$url" -c 64 --input "$out/a.txt" --out "$out/a-wrk.ndjson" 2>/dev/null)" | tee -a "$out/results.txt"
        echo "A r$r: $("$py" "$work/peers/vtpy_peer.py" --url "$url" -c 64 --input "$out/a.txt" --out "$out/a-vtpy.ndjson" 2>/dev/null)" | tee -a "$out/results.txt"
        echo "A r$r: $(run_vtbulk vtbulk-1thread "$url" "$out/a.txt" --tier unlimited --concurrency 64 --threads 1)" | tee -a "$out/results.txt"
        echo "A r$r: $(run_vtbulk vtbulk-2threads "$url" "$out/a.txt" --tier unlimited --concurrency 64 --threads 2)" | tee -a "$out/results.txt"
        stop_mock
    done
fi

if [[ " $scenarios " == *" B "* ]]; then
    "$py" "$work/gen_hashes.py" 5000 0.1 "$out/b.txt" --seed 1 >/dev/null
    for r in $(seq "$rounds"); do
        start_mock 18481 50 0
        url=http://127.0.0.1:18481
        echo "B r$r: $("$work/peers/wrk_peer.sh" --url "$url" -c 64 --input "$out/b.txt" --out "$out/b-wrk.ndjson" 2>/dev/null)" | tee -a "$out/results.txt"
        echo "B r$r: $(run_vtbulk vtbulk-b "$url" "$out/b.txt" --tier unlimited --concurrency 64)" | tee -a "$out/results.txt"
        stop_mock
    done
fi

if [[ " $scenarios " == *" Q "* ]]; then
    "$py" "$work/gen_hashes.py" 500 0 "$out/q.txt" --seed 7 >/dev/null
    MOCK_ACCESS_LOG=1 start_mock 18482 0 600
    dir="$(tr '\0' ' ' < "/proc/$mock_pid/cmdline" | sed -n 's|.* -c \(/[^ ]*\)/nginx\.conf.*|\1|p')"
    echo "Q: $(run_vtbulk vtbulk-q http://127.0.0.1:18482 "$out/q.txt" --tier unlimited --rate 600/min)" | tee -a "$out/results.txt"
    sleep 1.2 # the access log flushes every second
    stop_mock --keep
    cp "$dir/access.log" "$out/q.access.log"; rm -rf -- "$dir"
    echo "Q: mock answers by status: $(awk '{print $2}' "$out/q.access.log" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')" | tee -a "$out/results.txt"
    echo "Q: ideal 49.9 s (499 intervals of 100 ms)" | tee -a "$out/results.txt"
fi
echo "raw output: $out"

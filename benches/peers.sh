#!/usr/bin/env bash
# vtbulk against the peers of ../shared/bench, on the shared nginx mock, in one run.
#
#   benches/peers.sh                  # scenarios A, B, Q; ROUNDS=3
#   SCENARIOS="A" ROUNDS=1 benches/peers.sh
#   SCENARIOS="A" BEFORE=/tmp/before/target/release/vtbulk benches/peers.sh   # a before/after
#
# A: 100k lines (90,000 unique), zero latency, 64 in flight: wrk (the raw HTTP ceiling),
#    vt-py (gather + semaphore), vtbulk on a 1-thread and a 2-thread runtime.
#    vtbulk's figure is whole-process: requests / wall time from exec to exit (reading,
#    dedup, lookups, writing NDJSON to a file), with --cache off: the peers keep nothing, and
#    with the cache every round after the first would be answered without a request.
# B: 5k lines (4,500 unique), 50 ms mock latency, 64 in flight: wrk and vtbulk; the bound is
#    64 / 0.05 s = 1,280 requests/s.
# Q: the mock limited to R/min per key (limit_req, nodelay, burst 0: one request per
#    60/R s), 500 unique hashes, vtbulk --rate R/min, ROUNDS rounds per rate: wall time
#    against the ideal (499 intervals), the 429s (vtbulk's count and the mock's access log),
#    the closest two requests in the access log, and vtbulk's pacing report (lateness from
#    grant to departure, the adaptive margin). QRATES="600 300 1000" (default 600);
#    HOGS=1 runs one CPU hog per core at normal priority beside vtbulk and the mock.
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
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk --manifest-path "$root/Cargo.toml"
# VTBULK_BIN: another build to measure (an earlier commit's, for a before/after).
vtbulk="${VTBULK_BIN:-$root/target/release/vtbulk}"

mock_pid=""
cleanup() { if [ -n "$mock_pid" ]; then "$work/mock/stop.sh" "$mock_pid" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

start_mock() { # port latency rate
    mock_pid="$("$work/mock/start.sh" "$1" "$2" "$3" 2>/dev/null)"
}
stop_mock() { "$work/mock/stop.sh" "$mock_pid" "$@" >/dev/null 2>&1 || true; mock_pid=""; }

# vtbulk label url input extra-args... ; prints a RESULT line like the peers'
# (VTBULK_RUN=path runs that binary instead, for BEFORE's rows).
run_vtbulk() {
    local label="$1" url="$2" input="$3"; shift 3
    local vtbulk="${VTBULK_RUN:-$vtbulk}"
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
p = s.get('pacing') or {}
late = p.get('lateness_us') or {}
glate = p.get('grant_lateness_us') or {}
pace = (f" late_p50_us={late.get('p50')} late_p99_us={late.get('p99')} late_max_us={late.get('max')}"
        f" grant_late_p50_us={glate.get('p50')} grant_late_p99_us={glate.get('p99')}"
        f" margin_end={p.get('margin_end', 0):.4f} margin_peak={p.get('margin_peak', 0):.4f}") if p.get('interval_ms') else ""
print(f"RESULT tool={label} n={s['unique']} ok={s['ok']} notfound={s['not_found']} err={s['errors']} "
      f"skipped={s['skipped']} secs={secs:.2f} rps={s['requests']/secs:.1f} requests={s['requests']} "
      f"429s={s['rate_limited']} cpu={float(user)+float(sys_):.2f} maxrss_mb={int(rss)//1024}{pace}")
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
        # BEFORE: another build (an earlier commit's), in the same round, for a before/after.
        if [ -n "${BEFORE:-}" ]; then
            echo "A r$r: $(VTBULK_RUN="$BEFORE" run_vtbulk before-1thread "$url" "$out/a.txt" --tier unlimited --concurrency 64 --threads 1)" | tee -a "$out/results.txt"
            echo "A r$r: $(VTBULK_RUN="$BEFORE" run_vtbulk before-2threads "$url" "$out/a.txt" --tier unlimited --concurrency 64 --threads 2)" | tee -a "$out/results.txt"
        fi
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

hog_pids=()
start_hogs() { # one busy loop per core (HOGS_PER_CORE of them), normal priority
    local n; n=$(( $(nproc) * ${HOGS_PER_CORE:-1} ))
    for _ in $(seq "$n"); do sh -c 'while :; do :; done' & hog_pids+=("$!"); done
}
stop_hogs() { if [ "${#hog_pids[@]}" -gt 0 ]; then kill "${hog_pids[@]}" 2>/dev/null || true; wait "${hog_pids[@]}" 2>/dev/null || true; fi; hog_pids=(); }
trap 'stop_hogs; cleanup' EXIT

if [[ " $scenarios " == *" Q "* ]]; then
    "$py" "$work/gen_hashes.py" 500 0 "$out/q.txt" --seed 7 >/dev/null
    for rate in ${QRATES:-600}; do
        for r in $(seq "$rounds"); do
            label="vtbulk-q$rate${HOGS:+-hogs}-r$r"
            MOCK_ACCESS_LOG=1 start_mock 18482 0 "$rate"
            dir="$(tr '\0' ' ' < "/proc/$mock_pid/cmdline" | sed -n 's|.* -c \(/[^ ]*\)/nginx\.conf.*|\1|p')"
            if [ -n "${HOGS:-}" ]; then start_hogs; fi
            echo "Q $rate/min${HOGS:+ hogs} r$r: $(run_vtbulk "$label" http://127.0.0.1:18482 "$out/q.txt" --tier unlimited --rate "$rate/min")" | tee -a "$out/results.txt"
            stop_hogs
            sleep 1.2 # the access log flushes every second
            stop_mock --keep
            cp "$dir/access.log" "$out/$label.access.log"; rm -rf -- "$dir"
            python3 - "$out/$label.access.log" "$rate" <<'PY' | tee -a "$out/results.txt"
import sys
log, rate = sys.argv[1], int(sys.argv[2])
rows = [l.split() for l in open(log) if l.strip()]
by = {}
for r in rows:
    by[r[1]] = by.get(r[1], 0) + 1
ok = sorted(float(r[0]) for r in rows if r[1] != "429")
gaps = [round((b - a) * 1000) for a, b in zip(ok, ok[1:])]
ideal = 499 * 60 / rate
print(f"  mock: {' '.join(f'{k}={v}' for k, v in sorted(by.items()))}; closest admitted pair {min(gaps) if gaps else '-'} ms; ideal {ideal:.2f} s (499 x {60000 / rate:.0f} ms)")
PY
        done
    done
fi
echo "raw output: $out"

#!/usr/bin/env bash
# vtbulk against vt-mock's strict spacing limiter: the key allows one request per 60/R s, no
# burst, counted on requests of any nature (GET /users too), in whole milliseconds.
#
#   benches/strict.sh                      # R=600, 1,200 hashes, 5 rounds
#   RATE=1000 COUNT=500 ROUNDS=3 HOGS=1 benches/strict.sh
#   CACHE=1 benches/strict.sh              # with a fresh cache file per round (claims and
#                                          # journal on the way), not --cache off
#
# Prints, per round: vtbulk's wall time against the ideal (COUNT lookups and the users read:
# COUNT intervals of 60/R s), the 429s vt-mock answered, and vtbulk's pacing report (lateness
# from grant to departure, the adaptive margin). HOGS=1 runs one CPU hog per core at normal
# priority beside vtbulk and the mock. Raw output: benches/out/strict-<time>/.
set -euo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rate="${RATE:-600}" count="${COUNT:-1200}" rounds="${ROUNDS:-5}"
out="$root/benches/out/strict-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
vtbulk="$root/target/release/vtbulk" mock="$root/target/release/vt-mock"
"$mock" hashes --count "$count" --unknown 0.1 --list-seed 11 > "$out/hashes.txt"

pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

for r in $(seq "$rounds"); do
    "$mock" --key "testkey:strict=$rate/min" > "$out/mock.r$r.url" 2> "$out/mock.r$r.log" &
    mpid=$!; pids+=("$mpid")
    for _ in $(seq 100); do [ -s "$out/mock.r$r.url" ] && break; sleep 0.05; done
    url="$(head -1 "$out/mock.r$r.url")"
    hogs=()
    if [ -n "${HOGS:-}" ]; then
        for _ in $(seq "$(nproc)"); do sh -c 'while :; do :; done' & hogs+=("$!"); pids+=("$!"); done
    fi
    cache=(--cache off)
    if [ -n "${CACHE:-}" ]; then cache=(--cache "$out/r$r.sqlite3"); fi
    t0=$(date +%s.%N)
    VT_API_KEY=testkey "$vtbulk" enrich "$out/hashes.txt" --api-url "$url" --rate "$rate/min" \
        "${cache[@]}" -q --progress never -o "$out/r$r.csv" --summary-json "$out/r$r.summary.json" || true
    t1=$(date +%s.%N)
    if [ "${#hogs[@]}" -gt 0 ]; then kill "${hogs[@]}"; wait "${hogs[@]}" 2>/dev/null || true; fi
    curl -s "$url/_mock/stats" > "$out/r$r.stats.json"
    kill "$mpid"; wait "$mpid" 2>/dev/null || true
    python3 - "$out/r$r.summary.json" "$out/r$r.stats.json" "$t0" "$t1" "$rate" "$count" "$r" <<'PY'
import json, sys
summary, stats, t0, t1, rate, count, r = sys.argv[1:]
s, m = json.load(open(summary)), json.load(open(stats))
secs = float(t1) - float(t0)
ideal = int(count) * 60 / int(rate)
p = s["pacing"]; late = p["lateness_us"]
print(f"strict {rate}/min{' hogs' if r and __import__('os').environ.get('HOGS') else ''} r{r}: "
      f"secs={secs:.2f} ideal={ideal:.2f} over={100 * (secs / ideal - 1):+.2f}% "
      f"requests={s['requests']} mock_429s={m['by_status'].get('429', 0)} vtbulk_429s={s['rate_limited']} "
      f"late_p50_us={late['p50']} late_p99_us={late['p99']} late_max_us={late['max']} "
      f"grant_late_p50_us={p['grant_lateness_us']['p50']} grant_late_p99_us={p['grant_lateness_us']['p99']} "
      f"margin_end={p['margin_end']:.4f} margin_peak={p['margin_peak']:.4f} outcome={s['outcome']}")
log = m.get("log") or []
for i, e in enumerate(log):
    if e["status"] == 429:
        gaps = [log[j]["t_ms"] - log[j - 1]["t_ms"] for j in range(max(1, i - 3), min(len(log), i + 2))]
        print(f"  429 at request {i + 1} of {len(log)} ({e['route']}); gaps around it (ms): {gaps}")
PY
done | tee "$out/results.txt"
echo "raw output: $out"

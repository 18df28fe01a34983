#!/usr/bin/env bash
# vt-mock against the shared nginx mock, with wrk, in one run: requests/s of each at zero
# latency, keep-alive, 64 connections, one wrk thread, 200 answers only (every hash known).
#
#   benches/mock_vs_nginx.sh            # 5 rounds of 10 s per server
#   ROUNDS=3 SECS=8 benches/mock_vs_nginx.sh
#
# Each round starts every server afresh (so vt-mock's request log starts empty) and runs them
# one after the other: nginx, vt-mock with its default 70-engine bodies (~12 KB), vt-mock
# with --engines 18 (~4 KB, the size of the nginx mock's bodies). It prints each figure, the
# per-round ratios, and their medians; raw output goes to benches/out/mock_vs_nginx-<time>/.
# Needs nginx, libnginx-mod-http-echo and wrk (installed here when missing, as root).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${SHARED_BENCH:-$root/../shared/bench}"
rounds="${ROUNDS:-5}" secs="${SECS:-10}" conns="${CONNS:-64}"
out="$root/benches/out/mock_vs_nginx-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

if ! command -v wrk >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_http_echo_module.so ]; then
    "$root/scripts/install-bench-deps.sh"
fi
cargo build --release -q -p vtbulk-mock --manifest-path "$root/Cargo.toml"
mock="$root/target/release/vt-mock"

# The shared folder may be read-only; its start.sh writes only to a mktemp dir.
"$mock" hashes --count 50000 --list-seed 7 > "$out/hashes.txt"

pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

run_wrk() { # label url
    wrk -t1 -c"$conns" -d"${secs}s" -H 'x-apikey: testkey' -s "$root/benches/wrk_cycle.lua" \
        "$2" -- "$out/hashes.txt" > "$out/$1.r$round.txt"
    awk '/^Requests\/sec/ {print $2}' "$out/$1.r$round.txt"
}

start_vtmock() { # extra args...; sets url and vpid
    local port_file="$out/port"
    : > "$port_file"
    "$mock" --port 0 "$@" > "$port_file" 2>/dev/null &
    vpid=$!
    pids+=("$vpid")
    for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.05; done
    url=$(head -1 "$port_file")
}
stop_vtmock() { kill "$vpid" 2>/dev/null || true; wait "$vpid" 2>/dev/null || true; }

printf 'round nginx vtmock70 vtmock18 ratio70 ratio18\n' | tee "$out/results.txt"
for round in $(seq "$rounds"); do
    npid=$("$shared/mock/start.sh" 18380 2>/dev/null)
    n=$(run_wrk nginx http://127.0.0.1:18380)
    "$shared/mock/stop.sh" "$npid" >/dev/null 2>&1 || true
    start_vtmock; v70=$(run_wrk vtmock70 "$url"); stop_vtmock
    start_vtmock --engines 18; v18=$(run_wrk vtmock18 "$url"); stop_vtmock
    awk -v r="$round" -v n="$n" -v a="$v70" -v b="$v18" \
        'BEGIN { printf "%d %.0f %.0f %.0f %.3f %.3f\n", r, n, a, b, a/n, b/n }' | tee -a "$out/results.txt"
done
awk 'NR > 1 { n[NR]=$2; a[NR]=$3; b[NR]=$4; r70[NR]=$5; r18[NR]=$6 }
     function med(arr,   k, i, j, t, m, v) { m = 0; for (k in arr) v[++m] = arr[k];
         for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
         return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2 }
     END { printf "median nginx=%.0f vtmock70=%.0f vtmock18=%.0f ratio70=%.3f ratio18=%.3f\n",
           med(n), med(a), med(b), med(r70), med(r18) }' "$out/results.txt" | tee -a "$out/results.txt"
echo "raw output: $out"

#!/usr/bin/env bash
# How runs end when the API misbehaves, against vt-mock on loopback (release builds):
#   bursts of 429 TooManyRequestsError (--faults 429=0.05,burst=N, N = 5 and 20), 10,000
#   hashes at --rate unlimited; an unreachable API (nothing listens), 4,500 hashes; a closed
#   output (`| head -1`), 4,500 hashes at 5 ms latency.
#
#   benches/faults.sh                      # this checkout's build
#   VTBULK_BIN=/path/to/vtbulk benches/faults.sh
#
# Prints one line per case: exit code, wall time, requests, 429s, records by status.
# LIMIT (default 120 s) bounds each case. Raw output: benches/out/faults-<time>/.
set -uo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/benches/out/faults-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
limit="${LIMIT:-120}"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
vtbulk="${VTBULK_BIN:-$root/target/release/vtbulk}" mock="$root/target/release/vt-mock"
"$mock" hashes --count 10000 --unknown 0.1 --list-seed 5 > "$out/h10k.txt"
head -4500 "$out/h10k.txt" > "$out/h4500.txt"
export VT_API_KEY=testkey

start_mock() { # args...; sets url, mpid
    "$mock" "$@" > "$out/mock.url" 2>/dev/null & mpid=$!
    for _ in $(seq 100); do [ -s "$out/mock.url" ] && break; sleep 0.05; done
    url="$(head -1 "$out/mock.url")"
}
report() { # label code t0 t1 summary.json
    python3 - "$@" <<'PY'
import json, sys
label, code, t0, t1, path = sys.argv[1:]
secs = float(t1) - float(t0)
try:
    s = json.load(open(path))
except Exception:
    s = {}
g = lambda k: s.get(k, '-')
print(f"{label}: exit={code} secs={secs:.2f} requests={g('requests')} 429s={g('rate_limited')} "
      f"ok={g('ok')} not_found={g('not_found')} errors={g('errors')} skipped={g('skipped')} "
      f"skipped_by={g('skipped_by_reason')} by_kind={g('rate_limited_by_kind')}")
PY
}

for burst in 5 20; do
    start_mock --faults "429=0.05,burst=$burst"
    t0=$(date +%s.%N)
    timeout "$limit" "$vtbulk" enrich "$out/h10k.txt" --api-url "$url" --tier unlimited --rate unlimited \
        --cache off -q -o "$out/burst$burst.csv" --summary-json "$out/burst$burst.json"
    code=$?; t1=$(date +%s.%N)
    report "429 bursts of $burst, 10k hashes, unlimited" "$code" "$t0" "$t1" "$out/burst$burst.json"
    kill "$mpid"; wait "$mpid" 2>/dev/null
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
t0=$(date +%s.%N)
timeout "$limit" "$vtbulk" enrich "$out/h4500.txt" --api-url "http://127.0.0.1:$port" --tier unlimited \
    --rate unlimited --cache off -q -o "$out/unreachable.csv" --summary-json "$out/unreachable.json" 2> "$out/unreachable.err"
code=$?; t1=$(date +%s.%N)
report "unreachable API, 4,500 hashes" "$code" "$t0" "$t1" "$out/unreachable.json"
echo "  stderr: $(head -c 300 "$out/unreachable.err")"

start_mock --latency 5ms
t0=$(date +%s.%N)
timeout "$limit" "$vtbulk" enrich "$out/h4500.txt" --api-url "$url" --tier unlimited --rate unlimited \
    --cache off -q --summary-json "$out/pipe.json" | head -1 > /dev/null
code=${PIPESTATUS[0]}; t1=$(date +%s.%N)
sent=$(curl -s "$url/_mock/stats?log=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])')
echo "closed output (| head -1), 4,500 hashes: exit=$code secs=$(python3 -c "print(f'{$t1 - $t0:.2f}')") mock_requests=$sent"
kill "$mpid"; wait "$mpid" 2>/dev/null
echo "raw output: $out"

#!/usr/bin/env bash
# A fleet on one key (issue 15): N vtbulk processes sharing a key through one redis-server
# (`--coordinator`), against vt-mock's strict limiter at RATE/min (one request per interval,
# no burst). Prints, per N: the requests the mock saw, its 429s, the fleet's combined rate
# (from the first request's arrival to the last) over the key's rate, and Redis script calls
# and commands (scripts, publications, heartbeats) per request (`INFO commandstats`).
#
#   benches/fleet.sh                          # PROCS="3 6" RATE=600 PER=40
#   NO_BUILD=1 PROCS=3 RATE=6000 PER=200 benches/fleet.sh
#   LIMIT=window ...                          # VirusTotal's kind of limiter: RATE requests
#                                             # in any 60 s, no spacing (default: strict)
#
# Needs redis-server and redis-cli (Debian's redis-server package). Raw output:
# benches/out/fleet-<time>/.
set -euo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
procs="${PROCS:-3 6}" rate="${RATE:-600}" per="${PER:-40}" limit="${LIMIT:-strict}"
case "$limit" in
    strict) spec="strict=$rate/min" ;;
    window) spec="$rate/min" ;;
    *) echo "LIMIT must be strict or window" >&2; exit 2 ;;
esac
out="$root/benches/out/fleet-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
bin="$root/target/release"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no > "$out/redis.log" &
pids+=("$!")
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
"$bin/vt-mock" --port 0 --key "bench-key:$spec" > "$out/url" 2> "$out/mock.log" &
pids+=("$!")
for _ in $(seq 100); do [ -s "$out/url" ] && break; sleep 0.05; done
url=$(head -1 "$out/url")

for n in $procs; do
    curl -s -X POST "$url/_mock/reset" > /dev/null
    redis-cli -p "$port" flushall > /dev/null
    redis-cli -p "$port" config resetstat > /dev/null
    runs=()
    for i in $(seq "$n"); do
        "$bin/vt-mock" hashes --count "$per" --list-seed "$((n * 100 + i))" > "$out/list-$n-$i.txt"
        VT_API_KEY=bench-key "$bin/vtbulk" enrich "$out/list-$n-$i.txt" --api-url "$url" \
            --tier unlimited --rate "$rate/min" --cache off --format ndjson --quiet \
            --coordinator "redis://127.0.0.1:$port/0" -o "$out/out-$n-$i.ndjson" &
        runs+=("$!")
    done
    for r in "${runs[@]}"; do wait "$r"; done
    curl -s "$url/_mock/stats" > "$out/stats-$n.json"
    redis-cli -p "$port" info commandstats > "$out/redis-$n.txt"
    python3 - "$out/stats-$n.json" "$out/redis-$n.txt" "$n" "$rate" "$limit" <<'PY'
import json, re, sys
stats, redis, n, rate, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
s = json.load(open(stats))
log = s["log"]
times = sorted(e["t_ms"] for e in log)
count = len(times)
refused = sum(1 for e in log if e["status"] == 429)
span = (times[-1] - times[0]) / 1000
combined = (count - 1) / span * 60 if span > 0 else float("inf")
calls = commands = 0
for line in open(redis):
    m = re.match(r"cmdstat_([a-z|]+):calls=(\d+)", line)
    if not m or m.group(1) in ("info", "config|resetstat", "flushall"):
        continue
    commands += int(m.group(2))
    if m.group(1) in ("evalsha", "eval", "script|load"):
        calls += int(m.group(2))
print(f"{n} processes at {rate:.0f}/min ({limit}): {count} requests, 429s {refused}, span {span:.2f} s, "
      f"combined {combined:.1f}/min = {combined / rate:.4f} of the key's rate, "
      f"Redis script calls per request {calls / count:.2f}, commands per request (inside scripts too) {commands / count:.2f}")
PY
done | tee "$out/results.txt"
echo "raw output: $out"

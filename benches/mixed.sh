#!/usr/bin/env bash
# A mixed IOC list against vt-mock (issue 14): 100,000 lines, 60% hashes, 20% URLs, 10%
# domains, 10% IP addresses, the network ones defanged the usual ways. Measures, in one run:
#
#   1. extraction: `vtbulk plan --offline-quota --cache off` (read, refang, validate, dedup; no
#      lookups) over the mixed list and over a hash-only list of as many lines, each made
#      EXTRACT_X times longer (default 10: a million lines) so the time is not start-up;
#   2. lookups at zero latency: `vtbulk enrich --tier unlimited --concurrency 64 --threads 1
#      --cache off` over the mixed list and over a hash-only list of 100,000 (scenario A's
#      shape), both against vt-mock on loopback, same build, same machine, one after the other;
#   3. memory: the summary's bytes per unique URL, domain and IP (`indicator_dedup_bytes /
#      unique_indicators`) and per unique hash.
#
#   benches/mixed.sh                 # ROUNDS=3
#   NO_BUILD=1 ROUNDS=1 benches/mixed.sh
#
# Raw output: benches/out/mixed-<time>/ (lists deleted at the end unless KEEP=1).
set -euo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${ROUNDS:-3}" times="${EXTRACT_X:-10}"
out="$root/benches/out/mixed-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
bin="$root/target/release"

"$bin/vt-mock" hashes --count 60000 --seed 1 --list-seed 1 --unknown 0.1 > "$out/hashes60k.txt"
"$bin/vt-mock" hashes --count 100000 --seed 1 --list-seed 2 --unknown 0.1 > "$out/hashes100k.txt"
python3 - "$out" "$times" <<'PY'
import sys
out, times = sys.argv[1], int(sys.argv[2])
hashes = open(f"{out}/hashes60k.txt").read().split()
tlds = ["com", "net", "org", "ru", "top", "xyz", "info", "co.uk", "com.br", "online"]
def url(i):
    host = f"login-{i % 9000}.secure-{i % 37}-portal.{tlds[i % len(tlds)]}"
    u = f"https://{host}/account/verify.php?session={i * 7919 % 1000003:x}&id={i}"
    return u.replace("https", "hxxps").replace(".", "[.]", 1) if i % 3 else u
def domain(i):
    d = f"cdn{i}.update-{i % 113}.{tlds[i % len(tlds)]}"
    return d.replace(".", "[.]") if i % 2 else d.upper()
def ip(i):
    a = f"{45 + i % 150}.{(i >> 8) % 256}.{i % 256}.{(i * 7) % 254 + 1}"
    return a.replace(".", "[.]", 1) if i % 2 else a
lines = []
for i in range(100_000):
    k = i % 10
    if k < 6:
        lines.append(hashes[(i // 10) * 6 + k])
    elif k < 8:
        lines.append(url(i))
    elif k < 9:
        lines.append(domain(i))
    else:
        lines.append(ip(i))
mixed = "\n".join(lines) + "\n"
open(f"{out}/mixed100k.txt", "w").write(mixed)
open(f"{out}/mixed-x.txt", "w").write(mixed * times)
plain = open(f"{out}/hashes100k.txt").read()
open(f"{out}/hashes-x.txt", "w").write(plain * times)
PY

mock_pid=""
cleanup() { if [ -n "$mock_pid" ]; then kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
"$bin/vt-mock" --port 0 --key testkey --seed 1 > "$out/url" 2> "$out/mock.log" &
mock_pid=$!
for _ in $(seq 100); do [ -s "$out/url" ] && break; sleep 0.05; done
url=$(head -1 "$out/url")

for r in $(seq "$rounds"); do
    for list in mixed-x hashes-x; do
        t0=$(date +%s.%N)
        VT_API_KEY=bench "$bin/vtbulk" plan "$out/$list.txt" --offline-quota --cache off --json > "$out/$list.plan.json"
        t1=$(date +%s.%N)
        python3 - "$out/$list.plan.json" "$out/$list.txt" "$t0" "$t1" "$r" "$list" <<'PY'
import json, sys
plan, path, t0, t1, r, name = sys.argv[1:]
p = json.load(open(plan))
lines = sum(1 for _ in open(path, "rb"))
secs = float(t1) - float(t0)
inp = p["inputs"][0]
print(f"extract r{r} {name}: {lines} lines in {secs:.2f} s = {lines / secs / 1e6:.2f} M lines/s "
      f"(format {inp['format']}, hashes {inp['hashes']}, others {inp.get('indicators', 0)} "
      f"{inp.get('indicators_by_kind', {})}, unique {p['unique']}, invalid {inp['invalid']})")
PY
    done
    for list in mixed100k hashes100k; do
        label="$list-r$r"
        t0=$(date +%s.%N)
        /usr/bin/time -f "%e %U %S %M" -o "$out/$label.time" env VT_API_KEY=testkey "$bin/vtbulk" enrich \
            "$out/$list.txt" --api-url "$url" --format ndjson --progress never -q -o "$out/$label.ndjson" \
            --summary-json "$out/$label.summary.json" --cache off --tier unlimited --concurrency 64 --threads 1
        t1=$(date +%s.%N)
        python3 - "$out/$label.summary.json" "$out/$label.time" "$t0" "$t1" "$label" <<'PY'
import json, sys
summary, timing, t0, t1, label = sys.argv[1:]
s = json.load(open(summary))
wall, user, sys_, rss = open(timing).read().split()
secs = float(t1) - float(t0)
others = s.get("unique_indicators", 0)
per_other = s.get("indicator_dedup_bytes", 0) / others if others else 0
per_hash = (s["dedup_bytes"] - s.get("indicator_dedup_bytes", 0)) / max(1, s["unique"] - others)
print(f"lookups {label}: {s['requests']} requests in {secs:.2f} s = {s['requests'] / secs:.0f} req/s "
      f"(ok {s['ok']}, not_found {s['not_found']}, errors {s['errors']}, unique {s['unique']} of which "
      f"{others} URLs/domains/IPs; cpu {float(user) + float(sys_):.2f} s, maxrss {int(rss) // 1024} MB; "
      f"dedup {per_other:.0f} B per unique URL/domain/IP, {per_hash:.0f} B per unique hash)")
PY
    done
done | tee "$out/results.txt"
python3 - "$out/mixed100k.txt" <<'PY' | tee -a "$out/results.txt"
import sys
sys.path.insert(0, "")
# The canonical text's share of the bytes per unique: average refanged length by kind.
kinds = {"url": [], "domain": [], "ip": []}
for line in open(sys.argv[1]):
    v = line.strip().replace("[.]", ".").replace("hxxp", "http")
    if len(v) in (32, 40, 64) and all(c in "0123456789abcdef" for c in v):
        continue
    k = "url" if "://" in v else ("ip" if v.replace(".", "").isdigit() else "domain")
    kinds[k].append(len(v))
for k, v in kinds.items():
    print(f"canonical text {k}: {sum(v) / len(v):.0f} bytes on average ({len(v)} lines)")
PY
[ -n "${KEEP:-}" ] || rm -f "$out"/hashes*.txt "$out"/mixed*.txt "$out"/*.ndjson
echo "raw output: $out"

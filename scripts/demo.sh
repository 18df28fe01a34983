#!/usr/bin/env bash
# `make demo`: build, start vt-mock (the bundled mock VirusTotal) on a free loopback port with a
# demo key, enrich a real-world-shaped IOC list (fixtures/iocs/incident.txt: comments, mixed
# case, md5/sha1/sha256, duplicates, junk, a formula), show the first records and the summary,
# run it again to show the cache answering everything without a request, show the key's quotas
# (plan before, quota after), then stop the mock.
# The demo's cache lives in a temporary directory, never in your own cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The mock is on loopback: straight to it, whatever proxy the environment names.
export NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}"
cargo build --quiet --release -p vtbulk -p vtbulk-mock
bin=target/release
key=demo-key

out=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$out"' EXIT
# The demo key's quota: 600 lookups a minute and 20,000 a day (a small premium key).
"$bin/vt-mock" --port 0 --key "$key:600/min,20000/day" > "$out/url" 2> "$out/mock.log" &
pid=$!
for _ in $(seq 100); do [ -s "$out/url" ] && break; sleep 0.05; done
url=$(head -1 "$out/url")
echo "vt-mock serves VirusTotal v3 at $url"
echo "input: fixtures/iocs/incident.txt ($(wc -l < fixtures/iocs/incident.txt) lines)"
echo

echo "What would it cost? (vtbulk plan: reads the key's live quotas, looks nothing up)"
VT_API_KEY=$key "$bin/vtbulk" plan fixtures/iocs/incident.txt \
    --api-url "$url" --rate 600/min --cache "$out/cache.sqlite3" | sed 's/^/  /'
echo
VT_API_KEY=$key "$bin/vtbulk" enrich fixtures/iocs/incident.txt \
    --api-url "$url" --rate 600/min --progress never --cache "$out/cache.sqlite3" \
    -o "$out/incident.csv" --summary-json "$out/summary.json"
echo
echo "First records of the CSV (a few of its $(head -1 "$out/incident.csv" | tr ',' '\n' | wc -l) columns):"
python3 - "$out/incident.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
cols = ["input", "kind", "status", "malicious", "engines_total", "threat_label", "occurrences", "first_origin", "error_message"]
# The first records, and every URL, domain and IP (they come after the hashes).
shown = rows[:8] + [r for r in rows[8:] if r["kind"] in ("url", "domain", "ip")]
width = {c: max(len(c), *(len((r[c] or "")[:40]) for r in shown)) for c in cols}
print("  " + "  ".join(c.ljust(width[c]) for c in cols))
for r in shown:
    print("  " + "  ".join((r[c] or "")[:40].ljust(width[c]) for c in cols))
print(f"  ... {len(rows)} records in all")
PY
echo
echo "The same list again: every answer now comes from the cache (source=cache), no request:"
VT_API_KEY=$key "$bin/vtbulk" enrich fixtures/iocs/incident.txt \
    --api-url "$url" --rate 600/min --progress never --cache "$out/cache.sqlite3" \
    -o "$out/again.csv" --summary-json "$out/again.json" -q
python3 - "$out/again.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  {s['cache_hits']} records from the cache, {s['requests']} requests, "
      f"{s['elapsed_secs']:.2f} s, outcome {s['outcome']}")
PY
"$bin/vtbulk" cache stats --cache "$out/cache.sqlite3" | sed 's/^/  /'
echo
echo "The key's quotas now (vtbulk quota):"
VT_API_KEY=$key "$bin/vtbulk" quota --api-url "$url" --rate 600/min \
    --cache "$out/cache.sqlite3" | sed 's/^/  /'

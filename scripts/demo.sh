#!/usr/bin/env bash
# `make demo`: build vt-mock, start it on a free loopback port with a public-tier demo key,
# look a few files up (by md5, sha1 and sha256, a known-bad one, an unknown one), show what a
# client sees, the key's quota after it, and what the mock counted. Stops the mock at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --release -p vtbulk-mock --bin vt-mock
mock=target/release/vt-mock
key=demo-key

out=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$out"' EXIT
"$mock" --port 0 --key "$key:public,user=demo" > "$out/url" 2> "$out/mock.log" &
pid=$!
for _ in $(seq 100); do [ -s "$out/url" ] && break; sleep 0.05; done
url=$(head -1 "$out/url")
echo "vt-mock is serving VirusTotal v3 at $url (public tier: 4/min, 240/hour, 500/day)"

"$mock" hashes --count 2 --mix md5,sha1 --list-seed 3 > "$out/hashes.txt"
echo 275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f >> "$out/hashes.txt"
"$mock" hashes --count 1 --unknown 1 --list-seed 4 >> "$out/hashes.txt"
"$mock" hashes --count 1 --list-seed 5 >> "$out/hashes.txt"

show() { curl -s -H "x-apikey: $key" "$url/api/v3/files/$1" | python3 scripts/vtview.py file "$1"; }
echo; echo "Five lookups (the public tier allows 4 a minute, so the fifth is refused):"
while read -r h; do show "$h"; done < "$out/hashes.txt"

echo; echo "The key's quotas, as GET /users/{key} reports them:"
curl -s -H "x-apikey: $key" "$url/api/v3/users/$key" | python3 scripts/vtview.py quotas

echo; echo "What the mock counted (GET /_mock/stats):"
curl -s "$url/_mock/stats?log=0" | python3 scripts/vtview.py stats
echo; echo "vtbulk enrich (the pipeline over such lists) lands next; see README.md."

#!/usr/bin/env bash
# The nightly EDR run: a Defender-shaped export, CSV.gz, annotated.
#
#   benches/nightly.sh                     # 20 M rows, 2 M unique hashes, 95% cached, 3 rounds
#   ROWS=2000000 UNIQUE=200000 ROUNDS=1 benches/nightly.sh      # a quick one
#   NO_BUILD=1 ...                          # use the release binaries as they are
#   WORK=DIR KEEP=1 ...                     # keep the export and the warm cache in DIR; a
#                                           # later run with the same WORK reuses them
#
# The export has three hash columns (SHA1, SHA256, InitiatingProcessSHA256) drawn from pools
# of UNIQUE hashes in all (60% SHA-256, 20% SHA-1, 20% initiating SHA-256) known to vt-mock,
# beside timestamps, device ids (which look like SHA-1s and must be left out), names and
# command lines with quotes and commas. A cache is first filled with CACHED (95%) of the
# unique hashes; each round starts from a copy of it and runs
#
#   vtbulk enrich export.csv.gz --annotate --rate unlimited --cache COPY -o annotated.csv
#
# against vt-mock for the rest. Reported: rows/s end to end, each pass's share (pass 1 is
# the run: read, dedup, cache, look up; pass 2 re-reads and joins), peak RSS, and bytes per
# unique hash of the dedup table and of the join table. Then a fully cached re-run of the
# unique hashes as a plain list (records/s). Raw output under benches/out/nightly-*/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rows="${ROWS:-20000000}" unique="${UNIQUE:-2000000}" rounds="${ROUNDS:-3}"
cached_share="${CACHED:-0.95}"
out="$root/benches/out/nightly-$(date -u +%Y%m%dT%H%M%SZ)"
work="${WORK:-$(mktemp -d)}"
mkdir -p "$out"
pids=()
if [ -n "${KEEP:-}" ]; then
    trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
else
    trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
fi
mkdir -p "$work"
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -q -p vtbulk -p vtbulk-mock --manifest-path "$root/Cargo.toml"
fi
vtbulk="$root/target/release/vtbulk" mock="$root/target/release/vt-mock"

if [ ! -s "$work/export.csv.gz" ]; then
# Pools of hashes known to the mock.
n256=$((unique * 8 / 10)) n1=$((unique - unique * 8 / 10))
"$mock" hashes --count "$n256" --mix sha256 --list-seed 21 > "$work/sha256.txt"
"$mock" hashes --count "$n1" --mix sha1 --list-seed 22 > "$work/sha1.txt"
echo "generating $rows rows over $unique unique hashes..."
python3 - "$work" "$rows" "$cached_share" <<'EOF' | gzip -1 > "$work/export.csv.gz"
import random, sys
work, rows, share = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s256 = open(f"{work}/sha256.txt").read().split()
sha1 = open(f"{work}/sha1.txt").read().split()
cut = len(s256) * 3 // 4
a, c = s256[:cut], s256[cut:]   # SHA256 column, InitiatingProcessSHA256 column
every = a + sha1 + c
rng = random.Random(5)
shuffled = every[:]
rng.shuffle(shuffled)
with open(f"{work}/cached.txt", "w") as f:
    f.write("\n".join(shuffled[: int(len(shuffled) * share)]) + "\n")
with open(f"{work}/unique.txt", "w") as f:
    f.write("\n".join(every) + "\n")
devices = ["%040x" % rng.getrandbits(160) for _ in range(500)]
names = ["svchost.exe", "powershell.exe", "cmd.exe", "chrome.exe", "invoice.exe", "rundll32.exe"]
cmds = ['"C:\\Windows\\System32\\cmd.exe" /c echo ""hi""', "powershell -nop -w hidden -c ""iex(...)""",
        "rundll32.exe shell32.dll,Control_RunDLL", "chrome.exe --type=renderer, --lang=en-US"]
out = sys.stdout.buffer
out.write(b"Timestamp,DeviceId,DeviceName,ActionType,FileName,SHA1,SHA256,ProcessCommandLine,InitiatingProcessSHA256\r\n")
# Every hash at least once, then draws: an export is mostly repeats.
lines = []
na, n1, nc = len(a), len(sha1), len(c)
r = rng.random
for i in range(rows):
    ia = i if i < na else int(r() * na)
    i1 = i if i < n1 else int(r() * n1)
    ic = i if i < nc else int(r() * nc)
    cmd = cmds[i & 3]
    lines.append(
        f"2026-11-29T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z,"
        f"{devices[i % 500]},host-{i % 500}.corp.local,ProcessCreated,{names[i % 6]},"
        f"{sha1[i1]},{a[ia]},\"{cmd}\",{c[ic]}\r\n")
    if len(lines) == 100000:
        out.write("".join(lines).encode())
        lines.clear()
out.write("".join(lines).encode())
EOF
fi
ls -l "$work/export.csv.gz" | awk '{printf "export: %.0f MB gzipped\n", $5 / 1e6}'

"$mock" --port 0 > "$work/url" 2>/dev/null &
pids+=("$!")
for _ in $(seq 200); do [ -s "$work/url" ] && break; sleep 0.05; done
url="$(head -1 "$work/url")"
export VT_API_KEY=testkey XDG_CONFIG_HOME="$work/no-config"
if [ ! -s "$work/warm.sqlite3" ]; then
    echo "filling the cache with the cached share..."
    "$vtbulk" enrich "$work/cached.txt" --api-url "$url" --rate unlimited -q \
        --cache "$work/warm.sqlite3" --format ndjson -o "$work/warm.ndjson"
    rm -f "$work/warm.ndjson"
fi

summary() {
    python3 - "$@" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
wall, rss_kb, label = float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
a = s.get("annotate") or {}
rows = a.get("rows", 0)
p1 = s["elapsed_secs"]
p2 = a.get("elapsed_ms", 0) / 1000
u = max(s["unique"], 1)
fields = [
    f"{label}:", f"wall={wall:.2f}s",
    f"rows={rows}" if rows else f"records={s['unique'] + s['invalid']}",
    f"rows_per_s={rows / wall:,.0f}" if rows else f"records_per_s={(s['unique'] + s['invalid']) / wall:,.0f}",
    f"pass1={p1:.2f}s", f"pass2={p2:.2f}s" if a else "",
    f"unique={s['unique']}", f"lookups={s['lookups']}", f"cache_hits={s['cache_hits']}",
    f"maxrss={rss_kb / 1024:.0f}MB", f"dedup_bytes_per_unique={s.get('dedup_bytes', 0) / u:.1f}",
    f"join_bytes_per_unique={a.get('table_bytes', 0) / u:.1f}" if a else "",
    f"outcome={s['outcome']}",
]
print(" ".join(f for f in fields if f))
EOF
}

for r in $(seq "$rounds"); do
    rm -rf "$work/run.sqlite3" "$work/run.sqlite3-answers" "$work/run.sqlite3-wal" "$work/run.sqlite3-shm"
    cp "$work/warm.sqlite3" "$work/run.sqlite3"
    if [ -d "$work/warm.sqlite3-answers" ]; then cp -r "$work/warm.sqlite3-answers" "$work/run.sqlite3-answers"; fi
    /usr/bin/time -f "%e %M" -o "$work/time" "$vtbulk" enrich "$work/export.csv.gz" --annotate \
        --api-url "$url" --rate unlimited -q --cache "$work/run.sqlite3" \
        -o "$work/annotated.csv" --summary-json "$out/annotate-r$r.summary.json" || true
    read -r wall rss < "$work/time"
    summary "$out/annotate-r$r.summary.json" "$wall" "$rss" "annotate r$r" | tee -a "$out/results.txt"
    head -c 2000 "$work/annotated.csv" > "$out/annotated-head.csv"
    rm -f "$work/annotated.csv"
done

# A fully cached re-run of the unique hashes as a plain list, NDJSON out.
for r in $(seq "$rounds"); do
    /usr/bin/time -f "%e %M" -o "$work/time" "$vtbulk" enrich "$work/unique.txt" \
        --api-url "$url" --rate unlimited -q --cache "$work/run.sqlite3" --format ndjson \
        -o "$work/cached.ndjson" --summary-json "$out/cached-r$r.summary.json" || true
    read -r wall rss < "$work/time"
    summary "$out/cached-r$r.summary.json" "$wall" "$rss" "cached re-run r$r" | tee -a "$out/results.txt"
    rm -f "$work/cached.ndjson"
done
echo "raw output: $out"

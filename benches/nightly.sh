#!/usr/bin/env bash
# The nightly EDR run: a Defender-shaped export, CSV.gz, annotated, beside DuckDB doing the
# same join.
#
#   benches/nightly.sh                      # SCALE=20m: 20 M rows, 2 M unique hashes, 3 rounds
#   SCALE=4m ROUNDS=1 benches/nightly.sh    # the quick one: 4 M rows, 400 k unique
#   ROWS=2000000 UNIQUE=200000 ...          # any other size
#   NO_BUILD=1 ...                          # use the release binaries as they are
#   VTBULK_BIN=path ...                     # another build of vtbulk (a before/after)
#   WORK=DIR KEEP=1 ...                     # keep the export and the warm cache in DIR; a
#                                           # later run with the same WORK reuses them
#   NO_DUCKDB=1 ...                         # leave DuckDB out
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
# unique hashes as a plain list, NDJSON with every field and CSV with seven (records/s).
#
# The anchors, in the same run: `gzip -dc` of the export alone, and DuckDB (from PyPI, in a
# venv under WORK, two threads) joining the same export's three hash columns against a lookup
# table of every answer (made by vtbulk from the same cache, loaded before the clock starts;
# `strict_mode = false`, as the export has a careless command-line cell DuckDB refuses else)
# and writing CSV: the time a data engineer would take given the answers. The ratio printed is
# DuckDB's time over vtbulk's (above 1: vtbulk is faster). Raw output under
# benches/out/nightly-*/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${SCALE:-20m}" in
    4m) rows_default=4000000 unique_default=400000 ;;
    20m) rows_default=20000000 unique_default=2000000 ;;
    *) echo "SCALE is 4m or 20m" >&2; exit 2 ;;
esac
rows="${ROWS:-$rows_default}" unique="${UNIQUE:-$unique_default}" rounds="${ROUNDS:-3}"
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
vtbulk="${VTBULK_BIN:-$root/target/release/vtbulk}" mock="$root/target/release/vt-mock"

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

# The anchors' tools: DuckDB in a venv of its own (kept in WORK).
duck=""
if [ -z "${NO_DUCKDB:-}" ]; then
    if [ ! -x "$work/.duckdb/bin/python" ]; then
        python3 -m venv "$work/.duckdb" && "$work/.duckdb/bin/pip" install -q 'duckdb==2.0.1'
    fi
    duck="$work/.duckdb/bin/python"
fi
fields=status,malicious,engines_total,threat_label,first_submission_date

for r in $(seq "$rounds"); do
    rm -rf "$work/run.sqlite3" "$work/run.sqlite3-answers" "$work/run.sqlite3-wal" "$work/run.sqlite3-shm"
    cp "$work/warm.sqlite3" "$work/run.sqlite3"
    if [ -d "$work/warm.sqlite3-answers" ]; then cp -r "$work/warm.sqlite3-answers" "$work/run.sqlite3-answers"; fi
    sync
    /usr/bin/time -f "%e %M" -o "$work/time" "$vtbulk" enrich "$work/export.csv.gz" --annotate \
        --api-url "$url" --rate unlimited -q --cache "$work/run.sqlite3" \
        -o "$work/annotated.csv" --summary-json "$out/annotate-r$r.summary.json" || true
    read -r wall rss < "$work/time"
    summary "$out/annotate-r$r.summary.json" "$wall" "$rss" "annotate r$r" | tee -a "$out/results.txt"
    head -c 2000 "$work/annotated.csv" > "$out/annotated-head.csv"
    rm -f "$work/annotated.csv"
    # gzip -dc alone, the floor of one inflating pass on one core.
    /usr/bin/time -f "%e" -o "$work/time" gzip -dc "$work/export.csv.gz" > /dev/null
    gz=$(cat "$work/time")
    echo "gzip -dc r$r: wall=${gz}s ($(python3 -c "print(f'{$gz / $wall:.2f}')") x vtbulk's annotate)" | tee -a "$out/results.txt"
    if [ -n "$duck" ]; then
        if [ ! -s "$work/lookup.csv" ]; then
            # The lookup table: every answer, from the cache this round filled.
            "$vtbulk" enrich "$work/unique.txt" --api-url "$url" --rate unlimited -q \
                --cache "$work/run.sqlite3" --fields "input,$fields" -o "$work/lookup.csv"
        fi
        "$duck" - "$work" "$fields" "$wall" <<'PY' | tee -a "$out/results.txt"
import sys, time, duckdb
work, fields, vt = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute(f"CREATE TABLE lookup AS SELECT * FROM read_csv('{work}/lookup.csv', header = true, all_varchar = true)")
cols = ["SHA1", "SHA256", "InitiatingProcessSHA256"]
appended = ", ".join(
    f"{t}.{f} AS {c}_vt_{f}" for c, t in zip(cols, "abc") for f in fields)
joins = " ".join(
    f"LEFT JOIN lookup {t} ON e.{c} = {t}.input" for c, t in zip(cols, "abc"))
started = time.monotonic()
con.execute(
    f"COPY (SELECT e.*, {appended} FROM read_csv('{work}/export.csv.gz', header = true, delim = ',', quote = '\"', escape = '\"', strict_mode = false, "
    f"all_varchar = true) e {joins}) TO '{work}/duckdb.csv' (HEADER)")
wall = time.monotonic() - started
rows = con.execute(f"SELECT count(*) FROM read_csv('{work}/duckdb.csv', header = true, all_varchar = true)").fetchone()[0]
print(f"duckdb {duckdb.__version__} (2 threads) join: wall={wall:.2f}s rows={rows} "
      f"ratio_duckdb_over_vtbulk={wall / vt:.2f}")
PY
        rm -f "$work/duckdb.csv"
    fi
done

# A fully cached re-run of the unique hashes as a plain list: NDJSON with every field, then
# CSV with seven.
for r in $(seq "$rounds"); do
    /usr/bin/time -f "%e %M" -o "$work/time" "$vtbulk" enrich "$work/unique.txt" \
        --api-url "$url" --rate unlimited -q --cache "$work/run.sqlite3" --format ndjson \
        -o "$work/cached.ndjson" --summary-json "$out/cached-r$r.summary.json" || true
    read -r wall rss < "$work/time"
    summary "$out/cached-r$r.summary.json" "$wall" "$rss" "cached re-run ndjson r$r" | tee -a "$out/results.txt"
    rm -f "$work/cached.ndjson"
    /usr/bin/time -f "%e %M" -o "$work/time" "$vtbulk" enrich "$work/unique.txt" \
        --api-url "$url" --rate unlimited -q --cache "$work/run.sqlite3" \
        --fields "input,$fields,sha256" -o "$work/cached.csv" \
        --summary-json "$out/cached-csv-r$r.summary.json" || true
    read -r wall rss < "$work/time"
    summary "$out/cached-csv-r$r.summary.json" "$wall" "$rss" "cached re-run csv7 r$r" | tee -a "$out/results.txt"
    rm -f "$work/cached.csv"
done
echo "raw output: $out"

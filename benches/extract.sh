#!/usr/bin/env bash
# Extraction speed on a generated 1 GB corpus: incident-report prose (free text, with labelled
# import hashes and thumbprints among the file hashes), NDJSON endpoint events (Sysmon-style
# `Hashes` fields), report shapes (`report_shapes.md`: reports of prose paragraphs, a Markdown
# table of MD5/SHA-1/SHA-256 with an imphash column, sample names with the hash glued on, a
# fenced list of hashes, a schemeless defanged URL list, a JavaScript block, defanged hosts and
# plain reference links; one hash per ~100 bytes) and an IOC appendix (`ioc_appendix.md`:
# nothing but tables of hashes, the worst case: one per ~45 bytes). Times `vtbulk plan --offline-quota --cache off` over each file: the whole
# read path on one core (sniff, decode, extract, dedup), no lookups.
#
#   benches/extract.sh                  # 1 GB each (SIZE_MB=1024)
#   SIZE_MB=256 ROUNDS=3 benches/extract.sh
#   VTBULK_ARGS="--kinds file" benches/extract.sh   # hashes only (no URL/domain/IP scan)
#   VTBULK_ARGS="--input-format text --kinds all" FILES=report_shapes.md benches/extract.sh
#   BEFORE=/tmp/before/target/release/vtbulk benches/extract.sh   # another build, same rounds
#
# Hashes come from a pool of UNIQUE (default 100,000) files, as reports and events repeat
# them; UNIQUE=0 is not allowed, a large UNIQUE measures dedup as much as extraction.
# Prints MB/s per format and round. Raw output: benches/out/extract-<time>/ (the corpus is
# deleted at the end unless KEEP=1).
set -euo pipefail
export LC_ALL=C
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
size_mb="${SIZE_MB:-1024}" rounds="${ROUNDS:-3}"
out="$root/benches/out/extract-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p vtbulk --manifest-path "$root/Cargo.toml"
vtbulk="${VTBULK_BIN:-$root/target/release/vtbulk}"

python3 - "$out" "$size_mb" "${UNIQUE:-100000}" <<'PY'
import sys
out, size, pool = sys.argv[1], int(sys.argv[2]) << 20, int(sys.argv[3])
def hexes(i):
    i %= pool
    return f"{i:016x}{i ^ 0xdead:016x}{(i * 0x9e3779b97f4a7c15) & (2**64 - 1):016x}{~i & (2**64 - 1):016x}"
def fill(name, block):
    """Writes `block(i)` (its text and how many pool indices it used) to `name` from i = 0 on,
    until the file holds `size` bytes."""
    with open(f"{out}/{name}", "w") as f:
        i, n = 0, 0
        while n < size:
            text, used = block(i)
            f.write(text)
            n += len(text)
            i += used
def reports(i):
    parts = []
    for j in range(i, i + 2000, 2):
        h, g = hexes(j), hexes(j + 1)
        parts.append(
            f"On 2026-11-{j % 28 + 1:02} the loader (SHA256: {h}) was seen on host WS-{j % 10000:04} beaconing\n"
            f"to cdn-update.example every 300 seconds; its import hash is {h[:32]} and it dropped\n"
            f"stage{j}.dll (MD5 {g[:32]}). See https://www.virustotal.com/gui/file/{g} for details.\n\n")
    return "".join(parts), 2000
def events(i):
    parts = []
    for j in range(i, i + 2000, 2):
        h, g = hexes(j), hexes(j + 1)
        parts.append(
            '{"@timestamp":"2026-11-29T10:00:00Z","host":{"name":"ws-%d","id":"%s"},"winlog":{"event_id":1,'
            '"event_data":{"ProcessGuid":"{6d6e8f2a-1c2b-4e5f-9a8b-0c1d2e3f4a5b}","Image":"C:\\\\Temp\\\\t%d.exe",'
            '"Hashes":"SHA1=%s,MD5=%s,SHA256=%s,IMPHASH=%s"}}}\n' % (j % 5000, g[:32], j, h[:40], h[:32], h, g[:32]))
    return "".join(parts), 2000
PROSE = [
    "The intrusion began with a spear-phishing e-mail whose attachment, a password-protected archive,\n"
    "held a shortcut file. When opened, the shortcut ran a PowerShell one-liner that fetched the first\n"
    "stage from a compromised WordPress site and stored it under the user's profile. We observed the\n"
    "same lure in at least four organisations in the energy sector between March and May.\n",
    "The loader resolves its imports by hash, decrypts its configuration with a single-byte XOR key and\n"
    "checks for the presence of analysis tools before it contacts its command-and-control server. Its\n"
    "beacon interval is five minutes, with a jitter of twenty per cent, and it falls back to a second\n"
    "server after three failed attempts (see the table below for both addresses).\n",
    "Persistence is achieved through a scheduled task named after a legitimate updater; the task runs\n"
    "every hour and at logon. The operators used valid accounts for lateral movement (T1078) and RDP\n"
    "(T1021.001), and staged the collected documents in a hidden directory before exfiltration over\n"
    "HTTPS. Version 2.4.1 of the implant adds a keylogger module, i.e. the capability seen in 2.3.\n",
    "We thank our partners for their help; the full list of indicators is also available on our\n"
    "GitHub repository (https://github.com/example-labs/iocs) and in MISP. Detection names include\n"
    "Trojan.Win32.Agent.ac and HEUR:Trojan-Downloader.Script.Generic; the samples wrote invoke.png,\n"
    "x.dll and config.json next to themselves.\n",
]
def hash_row(k, h, g):
    return f"| stage{k}.dll | {g[:32]} | {h[:40]} | {h} | {g[32:]} |"
def report_shapes(i):
    rows, names, fenced, urls = [], [], [], []
    for k in range(8):
        h, g = hexes(i + k), hexes(i + k + 1)
        rows.append(hash_row(k, h, g))
        if k < 4:
            names.append(f"| {h}.bin | PE32 | loader {k} |")
            urls.append(f"- dropzone-{(i + k) % 977}[.]site/{h[:8]}/tool_rar")
        fenced.append(h)
    return (
        f"# Report {i}: a loader campaign\n\n## Summary\n\n" + PROSE[0] + "\n" + PROSE[1]
        + f"\nOn 2026-11-{i % 28 + 1:02} the loader reached update-cdn-{i % 991}[.]top and "
        f"45.142.{i % 250}[.]61:8443; see https://attack.mitre.org/techniques/T1071/001/.\n\n"
        + PROSE[2] + "\n## Indicators\n\n"
        "| File | MD5 | SHA-1 | SHA-256 | Imphash |\n|------|-----|-------|---------|---------|\n"
        + "\n".join(rows)
        + "\n\n| Name | Type | Notes |\n|---|---|---|\n" + "\n".join(names)
        + "\n\n```\n" + "\n".join(fenced) + "\n```\n\n" + "\n".join(urls)
        + "\n\n```js\nvar req = new XMLHttpRequest();\nreq.open(\"GET\", base + \"/t4\");\n"
        "var names = list.map(function (x) { return x.name; });\n```\n\n" + PROSE[3] + "\n"), 8
def ioc_appendix(i):
    rows = [hash_row(k, hexes(i + k), hexes(i + k + 1)) for k in range(40)]
    return ("## Files\n\n| File | MD5 | SHA-1 | SHA-256 | Imphash |\n|------|-----|-------|---------|---------|\n"
            + "\n".join(rows) + "\n\n"), 40
fill("reports.txt", reports)
fill("events.ndjson", events)
fill("report_shapes.md", report_shapes)
fill("ioc_appendix.md", ioc_appendix)
PY

# The corpus written back to disk before any timing: its writeback would compete for the cores.
sync
builds=("this=$vtbulk")
[ -z "${BEFORE:-}" ] || builds+=("before=$BEFORE")
for r in $(seq "$rounds"); do
    for file in ${FILES:-reports.txt events.ndjson report_shapes.md ioc_appendix.md}; do
        bytes=$(stat -c %s "$out/$file")
        for build in "${builds[@]}"; do
            label="${build%%=*}" bin="${build#*=}"
            t0=$(date +%s.%N)
            # shellcheck disable=SC2086
            VT_API_KEY=bench "$bin" plan "$out/$file" --offline-quota --cache off --json ${VTBULK_ARGS:-} \
                > "$out/$file.$label.plan.r$r.json"
            t1=$(date +%s.%N)
            python3 - "$out/$file.$label.plan.r$r.json" "$file" "$bytes" "$t0" "$t1" "$r" "$label" <<'PY'
import json, sys
plan, name, size, t0, t1, r, label = sys.argv[1:]
p = json.load(open(plan))
secs = float(t1) - float(t0)
inp = p["inputs"][0]
kinds = inp.get("indicators_by_kind", {})
print(f"{name} {label} r{r}: {int(size) / 2**20:.0f} MB in {secs:.2f} s = {int(size) / 2**20 / secs:.0f} MB/s "
      f"(format {inp['format']}, hashes {inp['hashes']}, indicators {kinds}, unique {p['unique']}, "
      f"excluded {inp['excluded']} {inp['excluded_by_reason']})")
PY
        done
    done
done | tee "$out/results.txt"
[ -n "${KEEP:-}" ] || rm -f "$out/reports.txt" "$out/events.ndjson" "$out/report_shapes.md" "$out/ioc_appendix.md"
echo "raw output: $out"

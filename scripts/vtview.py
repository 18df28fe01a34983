#!/usr/bin/env python3
"""One-line views of VirusTotal answers for `make demo`: `file HASH`, `quotas`, `stats` (stdin)."""
import json
import sys


def view_file(asked):
    d = json.load(sys.stdin)
    if "error" in d:
        e = d["error"]
        print(f"  {asked[:16]}...  {e['code']}: {e['message'][:60]}")
        return
    a = d["data"]["attributes"]
    s = a["last_analysis_stats"]
    label = (a.get("popular_threat_classification") or {}).get("suggested_threat_label", "-")
    print(f"  {asked[:16]}...  sha256 {d['data']['id'][:16]}...  "
          f"{s['malicious']:2d}/{sum(s.values())} malicious  {label:28s} {a.get('type_description', '')}")


def view_quotas():
    q = json.load(sys.stdin)["data"]["attributes"]["quotas"]
    for name in ("api_requests_hourly", "api_requests_daily", "api_requests_monthly"):
        print(f"  {name:22s} used {q[name]['used']:>3} of {q[name]['allowed']}")


def view_stats():
    s = json.load(sys.stdin)
    print(f"  requests: {s['total']}  by status: {s['by_status']}")


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "file":
        view_file(sys.argv[2])
    elif what == "quotas":
        view_quotas()
    else:
        view_stats()

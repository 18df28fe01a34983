#!/usr/bin/env python3
"""vtbulk's fault and crash suite, in one command (`make chaos`; `--short` runs inside
`make test`).

Every scenario runs the real binaries (vtbulk against the bundled vt-mock on loopback) and
checks the promise that matters: every input ends in the output exactly once, with the
documented exit code, and a run interrupted in any way resumes to the same records without
paying twice beyond the requests in flight.

  fault    vt-mock's seeded faults (5xx, resets, truncated bodies, stalls, 429 bursts) x input
           shapes (a generated list with repeats, junk and unknown hashes; a zstd CrowdStrike
           CSV; a Markdown report): each unique IOC once, errors carry VirusTotal's code,
           exit 0 or 1.
  kill     kill -9 of a cached run at seeded moments (after k of its requests), resumed:
           records equal to an uninterrupted run's, requests in both runs <= unique + in flight.
  signal   SIGTERM and SIGINT: exit 130, every input accounted for (done or skipped
           `interrupted`), resumed to the uninterrupted run's records.
  full     a full filesystem (a small tmpfs, root only; skipped with a message otherwise)
           for the output (64 KiB: exit 2, no half file) and for the cache (384 KiB: it
           opens, then fills: every record written once, the answers it could not keep counted,
           a warning despite --quiet, exit 8), and a summary that meets the full disk at the
           end (exit 2, the records written).

  hostile  a server that never answers (exit 6, and SIGTERM with requests stuck in flight),
           one that answers garbage (exit 6 after a few), endless bodies at --concurrency 64
           (peak RSS), a key command that hangs (its timeout, SIGTERM), Redis killed and
           frozen under 2,000 items (exit 7 within the grace + 5 s), outputs checked before
           the first request, a cache on a read-only mount (root) (`hostile.py`).

Prints a table (scenario, result, figures) and ends with `N passed, N failed` (exit 1 if any
failed). Seeded: `--seed S` replays a run.
"""

import argparse
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import hostile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "CANARY-chaos-5d2f-never-shown"


def binary(name, profile):
    return os.path.join(ROOT, "target", profile, name)


class Mock:
    """vt-mock on a free loopback port, stopped on exit."""

    def __init__(self, bin_dir, faults="", seed=1):
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "vt-mock"), "--port", "0", "--key", f"{KEY}:unlimited",
             "--seed", str(seed), "--faults", faults],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().strip()

    def stats(self):
        with urllib.request.urlopen(self.url + "/_mock/stats") as r:
            return json.load(r)

    def requests(self):
        return self.stats()["total"]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run_vtbulk(bin_dir, args, env_extra=None, wait=True):
    env = {k: v for k, v in os.environ.items()
           if k not in ("VT_API_KEY", "VTCLI_APIKEY", "VTBULK_API_URL", "VTBULK_REDIS_URL")}
    env["VT_API_KEY"] = KEY
    env["XDG_CONFIG_HOME"] = os.path.join(ROOT, "target", "no-user-config")
    env.update(env_extra or {})
    cmd = [os.path.join(bin_dir, "vtbulk"), "enrich", "--quiet", "--format", "ndjson"] + args
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def records(path_or_bytes):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb").read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def by_input(recs):
    """{(input, kind): record}, and the inputs seen more than once (an invalid value is a
    record per line it is on: its line is part of its name)."""
    seen, twice = {}, []
    for r in recs:
        k = (r["input"], r["kind"], r["first_origin"] if r["status"] == "invalid" else None)
        if k in seen:
            twice.append(k)
        seen[k] = r
    return seen, twice


def essence(r):
    return (r["status"], r.get("malicious"), r.get("sha256"), r.get("error_code"))


class Suite:
    def __init__(self, bin_dir, work, seed):
        self.bin, self.work, self.seed = bin_dir, work, seed
        self.rows, self.failed = [], 0

    def record(self, name, ok, figures):
        self.rows.append((name, "pass" if ok else "FAIL", figures))
        if not ok:
            self.failed += 1
        print(f"  {name:<34} {'pass' if ok else 'FAIL':<5} {figures}", flush=True)

    def skip(self, name, why):
        self.rows.append((name, "skip", why))
        print(f"  {name:<34} {'skip':<5} {why}", flush=True)

    # -- what hostile.py's scenarios use --------------------------------------------------
    @property
    def vtbulk(self):
        return os.path.join(self.bin, "vtbulk")

    def run(self, args, wait=True):
        return run_vtbulk(self.bin, args, wait=wait)

    def mock(self):
        return Mock(self.bin)

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("VT_API_KEY", "VTCLI_APIKEY", "VTBULK_API_URL", "VTBULK_REDIS_URL")}
        env["XDG_CONFIG_HOME"] = os.path.join(ROOT, "target", "no-user-config")
        return env

    @staticmethod
    def by_input(out):
        return by_input(records(out))

    # -- inputs -------------------------------------------------------------------------
    def inputs(self, count):
        listing = os.path.join(self.work, "list.txt")
        subprocess.run([os.path.join(self.bin, "vt-mock"), "hashes", "--count", str(count),
                        "--dup", "0.3", "--junk", "0.05", "--unknown", "0.1", "--mix",
                        "md5,sha1,sha256", "--list-seed", str(self.seed), "-o", listing],
                       check=True)
        return [("list", listing),
                ("csv.zst", os.path.join(ROOT, "fixtures/corpus/crowdstrike_events.csv.zst")),
                ("report.md", os.path.join(ROOT, "fixtures/corpus/report.md"))]

    def reference(self, path):
        """The records of a fault-free run, by input."""
        mock = Mock(self.bin)
        try:
            code, out, err = run_vtbulk(self.bin, [path, "--api-url", mock.url, "--cache", "off",
                                                   "--tier", "unlimited", "--rate", "unlimited"])
        finally:
            mock.stop()
        assert code in (0, 1), err.decode(errors="replace")
        return by_input(records(out))[0]

    # -- scenarios ----------------------------------------------------------------------
    def faults(self, shapes, matrix):
        config = os.path.join(self.work, "chaos.toml")
        with open(config, "w") as f:
            f.write('request_timeout = "2s"\nretries = 4\n')
        for shape, path in shapes:
            ref = self.reference(path)
            for label, spec in matrix:
                mock = Mock(self.bin, spec, seed=self.seed)
                try:
                    code, out, err = run_vtbulk(
                        self.bin, [path, "--api-url", mock.url, "--cache", "off", "--config",
                                   config, "--tier", "unlimited", "--rate", "unlimited"])
                    sent = mock.requests()
                finally:
                    mock.stop()
                got, twice = by_input(records(out))
                errors = [r for r in got.values() if r["status"] == "error"]
                ok = (code in (0, 1) and not twice and set(got) == set(ref)
                      and all(r.get("error_code") for r in errors)
                      and all(essence(got[k]) == essence(ref[k])
                              for k in ref if got[k]["status"] != "error")
                      and KEY.encode() not in out + err)
                self.record(f"fault {label} x {shape}", ok,
                            f"exit {code}, {len(got)}/{len(ref)} once, {len(errors)} errors, "
                            f"{sent} requests")

    def kills(self, moments, count):
        listing = os.path.join(self.work, "kill-list.txt")
        subprocess.run([os.path.join(self.bin, "vt-mock"), "hashes", "--count", str(count),
                        "--dup", "0.2", "--unknown", "0.1", "--list-seed", str(self.seed + 7),
                        "-o", listing], check=True)
        ref = self.reference(listing)
        rng = random.Random(self.seed)
        unique = len(ref)
        for i in range(moments):
            k = rng.randrange(1, max(2, unique - 1))
            cache = os.path.join(self.work, f"kill-{i}.sqlite")
            out_file = os.path.join(self.work, f"kill-{i}.ndjson")
            mock = Mock(self.bin)
            try:
                args = [listing, "--api-url", mock.url, "--cache", cache, "--tier", "unlimited",
                        "--rate", "3000/min", "--concurrency", "4", "-o", out_file]
                proc = run_vtbulk(self.bin, args, wait=False)
                deadline = time.monotonic() + 60
                while mock.requests() < k + 1 and proc.poll() is None \
                        and time.monotonic() < deadline:
                    time.sleep(0.002)
                killed = proc.poll() is None
                proc.kill()
                proc.communicate()
                code, _, err = run_vtbulk(self.bin, args)
                sent = mock.requests()
            finally:
                mock.stop()
            got, twice = by_input(records(out_file)) if os.path.exists(out_file) else ({}, [])
            # Requests: one /users per run, each unique lookup once, plus those in flight
            # (at most the concurrency) when the first run died.
            bound = unique + 2 + 4
            ok = (code in (0, 1) and not twice and set(got) == set(ref)
                  and all(essence(got[x]) == essence(ref[x]) for x in ref) and sent <= bound)
            self.record(f"kill -9 #{i + 1} after {k} requests", ok,
                        f"{'killed' if killed else 'finished first'}, resumed exit {code}, "
                        f"{sent} requests (<= {bound})")

    def signals(self, count):
        listing = os.path.join(self.work, "signal-list.txt")
        subprocess.run([os.path.join(self.bin, "vt-mock"), "hashes", "--count", str(count),
                        "--list-seed", str(self.seed + 11), "-o", listing], check=True)
        ref = self.reference(listing)
        for sig in (signal.SIGTERM, signal.SIGINT):
            cache = os.path.join(self.work, f"{sig.name}.sqlite")
            mock = Mock(self.bin)
            try:
                args = [listing, "--api-url", mock.url, "--cache", cache, "--tier", "unlimited",
                        "--rate", "1200/min"]
                proc = run_vtbulk(self.bin, args, wait=False)
                while mock.requests() < 10 and proc.poll() is None:
                    time.sleep(0.005)
                proc.send_signal(sig)
                out, err = proc.communicate(timeout=120)
                first, twice = by_input(records(out))
                skipped = [r for r in first.values() if r.get("error_code") == "interrupted"]
                code2, out2, _ = run_vtbulk(self.bin, args)
            finally:
                mock.stop()
            second, twice2 = by_input(records(out2))
            ok = (proc.returncode == 130 and not twice and set(first) == set(ref)
                  and skipped and code2 == 0 and not twice2
                  and all(essence(second[x]) == essence(ref[x]) for x in ref))
            self.record(f"{sig.name}", ok,
                        f"exit {proc.returncode}, {len(first) - len(skipped)} done + "
                        f"{len(skipped)} interrupted; resumed exit {code2}")

    def full_disk(self):
        small = hostile.tmpfs(self, "full filesystem", "small", "64k")
        if not small:
            return
        try:
            listing = os.path.join(self.work, "full-list.txt")
            subprocess.run([os.path.join(self.bin, "vt-mock"), "hashes", "--count", "1500",
                            "--list-seed", str(self.seed + 13), "-o", listing], check=True)
            mock = Mock(self.bin)
            try:
                out_file = os.path.join(small, "out.ndjson")
                code, _, err = run_vtbulk(self.bin, [listing, "--api-url", mock.url, "--cache",
                                                     "off", "--tier", "unlimited", "--rate",
                                                     "unlimited", "-o", out_file])
                half = os.path.exists(out_file) or any(
                    n.endswith(".partial") for n in os.listdir(small))
                self.record("full filesystem: output", code == 2 and not half,
                            f"exit {code}, half file left: {half}; "
                            f"{err.decode(errors='replace').strip()[:60]}")
                # Room for the cache to open and fill mid-run.
                subprocess.run(["umount", small], capture_output=True)
                subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", small],
                               check=True)
                cache = os.path.join(small, "cache.sqlite")
                summary = os.path.join(self.work, "full-summary.json")
                code, out, err = run_vtbulk(self.bin, [listing, "--api-url", mock.url, "--cache",
                                                       cache, "--tier", "unlimited", "--rate",
                                                       "unlimited", "--summary-json", summary])
                got, twice = by_input(records(out))
                lost = json.load(open(summary)).get("cache_write_errors", 0)
                warned = b"could not be kept in the cache" in err
                # The cache filled mid-run: every record still written once, the answers it
                # could not keep counted, said on stderr despite --quiet, and exit 8.
                self.record("full filesystem: cache",
                            code == 8 and warned and len(got) == 1500 and not twice
                            and lost > 0,
                            f"exit {code}, {len(got)} records, {lost} answers not kept, "
                            f"warned: {warned}")
                # The summary, checked writable at the start, meets a full disk at the end:
                # exit 2 and a line, no request spent twice, the records on stdout.
                fill = os.path.join(small, "filler")
                with open(fill, "wb") as f:
                    try:
                        f.write(b"\0" * (1 << 20))
                    except OSError:
                        pass
                short = os.path.join(self.work, "full-short.txt")
                with open(listing) as src, open(short, "w") as dst:
                    dst.writelines(src.readlines()[:20])
                late = os.path.join(small, "summary.json")
                code, out, err = run_vtbulk(self.bin, [short, "--api-url", mock.url, "--cache",
                                                       "off", "--tier", "unlimited", "--rate",
                                                       "unlimited", "--summary-json", late])
                got, _ = by_input(records(out))
                said = b"failed to write the summary" in err
                self.record("full filesystem: summary at end",
                            code == 2 and said and len(got) == 20,
                            f"exit {code}, {len(got)} records, said: {said}")
            finally:
                mock.stop()
        finally:
            subprocess.run(["umount", small], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the form inside make test")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CHAOS_SEED", "1")))
    ap.add_argument("--profile", default="debug", help="target/<profile>/ binaries")
    args = ap.parse_args()
    bin_dir = os.path.join(ROOT, "target", args.profile)
    work = tempfile.mkdtemp(prefix="vtbulk-chaos-")
    suite = Suite(bin_dir, work, args.seed)
    print(f"vtbulk chaos (seed {args.seed}, {'short' if args.short else 'full'})")
    print(f"  {'scenario':<34} {'result':<5} figures")
    try:
        shapes = suite.inputs(120 if args.short else 400)
        matrix = [("none", ""), ("5xx", "500=0.1,503=0.1,504=0.05"), ("reset", "reset=0.15"),
                  ("truncate", "truncate=0.15"), ("stall", "stall=0.03,stall-for=3s"),
                  ("429 burst", "429=0.05,burst=3")]
        if args.short:
            shapes, matrix = shapes[:1] + shapes[2:], matrix[:4]
        suite.faults(shapes, matrix)
        suite.kills(3 if args.short else 20, 80 if args.short else 200)
        suite.signals(60)
        suite.full_disk()
        hostile.run_all(suite, args.short)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(1 for r in suite.rows if r[1] == "pass")
    print(f"{passed} passed, {suite.failed} failed")
    sys.exit(1 if suite.failed else 0)


if __name__ == "__main__":
    main()

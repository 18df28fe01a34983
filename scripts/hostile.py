"""The hostile servers and stalls of vtbulk's chaos suite (issue 27's probe, kept): a server that
never answers, one that answers garbage, one whose bodies never end, a Redis lost (killed or
frozen) under a long run, a key command that hangs, and outputs that cannot be written.

Each scenario runs the real binary and records a pass or a failure with its figures on the
suite (`chaos.py`); the servers are the suite's own, on loopback, stopped when the scenario
ends. The seconds printed are measured; the bounds they are checked against are the issue's
promises (the grace plus 5 s, a signal within a second), with the slack a loaded CI host
needs only where a promise is about a second.
"""

import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time


class OddServer:
    """A TCP server on loopback: `mode` is "silent" (reads, never answers), "garbage" (answers
    bytes that are not HTTP) or "endless" (a 200 whose chunked body never ends). Counts the
    requests it read."""

    def __init__(self, mode):
        self.mode, self.requests, self.conns = mode, 0, []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            while conn.recv(65536):
                with self.lock:
                    self.requests += 1
                if self.mode == "garbage":
                    conn.sendall(os.urandom(512) + b"\r\n\r\n")
                    conn.close()
                    return
                if self.mode == "endless":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n")
                    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
                    while True:
                        conn.sendall(chunk)
        except OSError:
            pass

    def stop(self):
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


def config(work, name, text):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def silent_server(suite, listing, count):
    """A server that takes connections and never answers: exit 6 naming it, every item
    skipped; and SIGTERM with requests stuck in flight ends the run at once."""
    server = OddServer("silent")
    try:
        cfg = config(suite.work, "silent.toml", 'request_timeout = "2s"\n')
        started = time.monotonic()
        code, out, err = suite.run([listing, "--api-url", server.url, "--cache", "off",
                                    "--config", cfg, "--rate", "unlimited"])
        took = time.monotonic() - started
        got, twice = suite.by_input(out)
        skipped = sum(1 for r in got.values() if r.get("error_code") == "api_unreachable")
        named = f"no answer from {server.url}".encode() in err
        suite.record("silent server", code == 6 and named and skipped == count and not twice,
                     f"exit {code} after {took:.1f} s (timeout 2 s), {skipped}/{count} "
                     f"skipped, {server.requests} requests, named: {named}")
        cfg = config(suite.work, "silent-long.toml", 'request_timeout = "600s"\n')
        proc = suite.run([listing, "--api-url", server.url, "--cache", "off", "--config", cfg,
                          "--rate", "unlimited", "--offline-quota"], wait=False)
        seen = server.requests
        deadline = time.monotonic() + 60
        while server.requests < seen + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        took = time.monotonic() - sent
        got, _ = suite.by_input(out)
        stopped = sum(1 for r in got.values() if r.get("error_code") == "interrupted")
        suite.record("silent server: SIGTERM", proc.returncode == 130 and stopped == count
                     and took < 3, f"exit {proc.returncode} {took:.2f} s after SIGTERM "
                     f"(requests in flight, timeout 600 s), {stopped}/{count} skipped")
    finally:
        server.stop()


def garbage_server(suite, listing, count):
    """Replies that are not HTTP: a few decide it (exit 6), not the retry budget x items."""
    server = OddServer("garbage")
    try:
        code, out, err = suite.run([listing, "--api-url", server.url, "--cache", "off",
                                    "--rate", "unlimited", "--concurrency", "4"])
        got, twice = suite.by_input(out)
        said = f"not an HTTP API at {server.url}".encode() in err
        suite.record("garbage server", code == 6 and said and len(got) == count and not twice
                     and server.requests <= 12,
                     f"exit {code}, {server.requests} requests for {count} items, said: {said}")
    finally:
        server.stop()


def endless_bodies(suite, listing, count):
    """An endless body on every connection at --concurrency 64: memory stays bounded (peak
    RSS < 300 MB), every item ends as an error record."""
    server = OddServer("endless")
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        cfg = config(suite.work, "endless.toml", 'request_timeout = "60s"\nretries = 0\n')
        started = time.monotonic()
        code, out, err = suite.run([listing, "--api-url", server.url, "--cache", "off",
                                    "--config", cfg, "--rate", "unlimited", "--concurrency",
                                    "64", "--offline-quota"])
        took = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        got, twice = suite.by_input(out)
        errors = sum(1 for r in got.values() if r.get("error_code") == "InvalidBody")
        # ru_maxrss of the children is the largest ever: meaningful once it exceeds the
        # earlier children's.
        rss_mb = peak / 1024
        suite.record("endless bodies x 64", code == 1 and errors == count and not twice
                     and (peak <= before or rss_mb < 300),
                     f"exit {code} after {took:.1f} s, {errors}/{count} InvalidBody, peak RSS "
                     f"{rss_mb:.0f} MB (of all children so far)")
    finally:
        server.stop()


def key_command(suite):
    """A key command that hangs: killed at its timeout with its group (exit 2), and by
    SIGTERM (exit 130)."""
    pids = os.path.join(suite.work, "key-pids")
    if os.path.exists(pids):
        os.remove(pids)
    command = f"sh -c 'sleep 1000 & echo $! > {pids}; wait'"
    started = time.monotonic()
    proc = subprocess.run([suite.vtbulk, "config", "--api-key-command", command,
                           "--api-key-command-timeout", "2s"], capture_output=True,
                          env=suite.env(), timeout=120)
    took = time.monotonic() - started
    child = open(pids).read().strip() if os.path.exists(pids) else ""
    gone = not child or ended(child)
    suite.record("hanging key command", proc.returncode == 2 and gone and b"within 2s"
                 in proc.stderr, f"exit {proc.returncode} after {took:.1f} s (timeout 2 s), "
                 f"its child {'killed' if gone else 'ALIVE'}")
    os.remove(pids) if os.path.exists(pids) else None
    p = subprocess.Popen([suite.vtbulk, "config", "--api-key-command",
                          f"sh -c 'echo $$ > {pids}; exec sleep 1000'"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=suite.env())
    deadline = time.monotonic() + 30
    while not (os.path.exists(pids) and open(pids).read().strip()) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    child = open(pids).read().strip() if os.path.exists(pids) else ""
    sent = time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    took = time.monotonic() - sent
    gone = bool(child) and ended(child)
    suite.record("hanging key command: SIGTERM", p.returncode == 130 and gone and took < 3,
                 f"exit {p.returncode} {took:.2f} s after SIGTERM, the command "
                 f"{'killed' if gone else 'ALIVE'}")


def ended(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return True
    return stat.rsplit(") ", 1)[-1][:1] in ("Z", "X")


def redis_lost(suite, count, short):
    """Redis lost under a long run, killed and frozen: exit 7 within the grace plus 5 s
    whatever the list's length, every item once; SIGINT within a second meanwhile."""
    server = shutil.which("redis-server")
    if not server:
        suite.skip("redis lost", "no redis-server (make deps installs it)")
        return
    listing = os.path.join(suite.work, "redis-list.txt")
    subprocess.run([os.path.join(suite.bin, "vt-mock"), "hashes", "--count", str(count),
                    "--list-seed", str(suite.seed + 17), "-o", listing], check=True)
    grace = 5
    cases = [("killed", signal.SIGKILL, None), ("frozen", signal.SIGSTOP, None)]
    if not short:
        cases.append(("frozen, SIGINT", signal.SIGSTOP, signal.SIGINT))
    for label, how, interrupt in cases:
        redis = Redis(server)
        mock = suite.mock()
        try:
            proc = suite.run([listing, "--api-url", mock.url, "--cache", "off", "--tier",
                              "unlimited", "--rate", "1200/min", "--coordinator", redis.url,
                              "--coordinator-grace", f"{grace}s"], wait=False)
            deadline = time.monotonic() + 60
            while mock.requests() < 20 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            redis.proc.send_signal(how)
            lost = time.monotonic()
            if interrupt:
                time.sleep(2)
                proc.send_signal(interrupt)
                lost = time.monotonic()
            out, err = proc.communicate(timeout=300)
            took = time.monotonic() - lost
        finally:
            redis.stop()
            mock.stop()
        got, twice = suite.by_input(out)
        if interrupt:
            ok = proc.returncode == 130 and took < 2
            what = f"{took:.2f} s after SIGINT"
        else:
            ok = proc.returncode == 7 and took <= grace + 5
            what = f"{took:.1f} s after Redis was {label} (grace {grace} s)"
        suite.record(f"redis {label}", ok and len(got) == count and not twice,
                     f"exit {proc.returncode} {what}, {len(got)}/{count} records once")


class Redis:
    """redis-server on a free loopback port, no persistence."""

    def __init__(self, server):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.dir = tempfile.mkdtemp(prefix="vtbulk-chaos-redis-")
        self.proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def outputs_checked_first(suite, listing):
    """A summary in a missing directory, and an output that is the input: exit 2 before any
    request."""
    mock = suite.mock()
    try:
        missing = os.path.join(suite.work, "no", "such", "dir", "summary.json")
        code, _, err = suite.run([listing, "--api-url", mock.url, "--cache", "off",
                                  "--summary-json", missing])
        code2, _, _ = suite.run([listing, "--api-url", mock.url, "--cache", "off", "-o",
                                 listing])
        sent = mock.requests()
    finally:
        mock.stop()
    intact = os.path.getsize(listing) > 0
    suite.record("outputs checked first", code == 2 and code2 == 2 and sent == 0 and intact,
                 f"missing directory: exit {code}; -o the input: exit {code2}; {sent} requests,"
                 f" input intact: {intact}")


def tmpfs(suite, scenario, name, size):
    """A tmpfs of `size` mounted at `work/name` (root only), or None with the scenario skipped
    and why."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        suite.skip(scenario, "needs root to mount a tmpfs")
        return None
    path = os.path.join(suite.work, name)
    os.makedirs(path, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                      capture_output=True).returncode != 0:
        suite.skip(scenario, "mount -t tmpfs refused (a container without it)")
        return None
    return path


def read_only_cache(suite, listing, count):
    """A cache on a read-only mount (root only): answered from, with one warning, exit 0."""
    mnt = tmpfs(suite, "read-only cache", "ro", "8m")
    if not mnt:
        return
    mock = suite.mock()
    try:
        cache = os.path.join(mnt, "cache.sqlite3")
        args = [listing, "--api-url", mock.url, "--cache", cache, "--tier", "unlimited",
                "--rate", "unlimited"]
        suite.run(args)
        subprocess.run(["mount", "-o", "remount,ro", mnt], check=True)
        code, out, err = suite.run(args)
        got, _ = suite.by_input(out)
        cached = sum(1 for r in got.values() if r.get("source") == "cache")
        warned = err.count(b"is read-only")
        stats = subprocess.run([suite.vtbulk, "cache", "stats", "--cache", cache],
                               capture_output=True, env=suite.env())
        suite.record("read-only cache", code == 0 and cached == count and warned == 1
                     and b"damaged" not in err and stats.returncode == 0,
                     f"exit {code}, {cached}/{count} from the cache, warnings {warned}, "
                     f"cache stats exit {stats.returncode}")
    finally:
        mock.stop()
        subprocess.run(["umount", mnt], capture_output=True)


def run_all(suite, short):
    """Every scenario above, on a list of hashes the mock knows."""
    count = 19
    listing = os.path.join(suite.work, "hostile-list.txt")
    subprocess.run([os.path.join(suite.bin, "vt-mock"), "hashes", "--count", str(count),
                    "--list-seed", str(suite.seed + 19), "-o", listing], check=True)
    silent_server(suite, listing, count)
    garbage_server(suite, listing, count)
    endless = os.path.join(suite.work, "endless-list.txt")
    n = 64 if short else 200
    subprocess.run([os.path.join(suite.bin, "vt-mock"), "hashes", "--count", str(n),
                    "--list-seed", str(suite.seed + 23), "-o", endless], check=True)
    endless_bodies(suite, endless, n)
    key_command(suite)
    redis_lost(suite, 2000, short)
    outputs_checked_first(suite, listing)
    read_only_cache(suite, listing, count)

#!/usr/bin/env python3
"""dashboard.py APP BIN_DIR SCREENSHOT — the live dashboard's test (run.sh checks what it needs).

Starts a Redis server and a two-node cluster of APP (flashsale or social) on 127.0.0.1, each node
in its own directory under a temporary one, and APP's load generator against n1; loads n1's
/dashboard in headless Chromium through chromedriver (Debian's python3-selenium, no pip), then:

  1. the page polls and lists both members up;
  2. the numbers move between two reads: store commits (both apps), emails sent or the outbox's
     backlog (flashsale), fan-out inserts (social), and, when the node serves /metrics, actor
     messages and HTTP requests — and a per-second rate is above zero;
  3. n2 killed with kill -9 shows as down in the members' table, and its "is down" log line shows
     among the recent events;
  4. a screenshot of the page goes to SCREENSHOT; no JavaScript error was logged;
  5. n1 stops cleanly on SIGTERM (exit 0), and neither node's output has a sanitizer's report.

Every wait has a deadline far above what it takes (nothing here depends on speed); the figures
are read from the page's data-k / data-v attributes (runtime/src/web/dashboard.html).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

DEADLINE = 60.0  # seconds, for every wait


def log(msg):
    print("dashboard: " + msg, flush=True)


class Failed(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None):
    """(status, text), or (None, why) when nothing answered."""
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def wait_for(what, fn, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise Failed("waited %.0f s for %s" % (deadline, what))
        time.sleep(0.2)


class Cluster:
    """Redis, n1 and n2 of APP, and the load generator; stop() ends what it started."""

    def __init__(self, app, bindir, base):
        self.app, self.bindir, self.base = app, bindir, base
        self.procs = {}      # name -> Popen
        self.http = {"n1": free_port(), "n2": free_port()}
        self.cport = {"n1": free_port(), "n2": free_port()}
        self.redis = free_port()

    def spawn(self, name, argv):
        out = open(os.path.join(self.base, name + ".log"), "w")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            cwd=self.base, start_new_session=True)

    def tail(self, name, n=15):
        try:
            with open(os.path.join(self.base, name + ".log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def config(self):
        nodes = ",\n    ".join('{ name = "%s"; http = "127.0.0.1:%d"; }' % (n, self.http[n])
                               for n in ("n1", "n2"))
        members = ",\n    ".join('{ name = "%s"; listen = "tcp://127.0.0.1:%d"; workers = 2; }'
                                 % (n, self.cport[n]) for n in ("n1", "n2"))
        extra = "email = { rate = 50; burst = 10; };" if self.app == "flashsale" else ""
        text = """%s = {
  %s
  nodes = (
    %s
  );
};
store = { backend = "redis"; redis = { host = "127.0.0.1"; port = %d; }; redeliver_ms = 5000; };
cluster = {
  secret = "dashboard-test-secret";
  heartbeat_ms = 100;
  down_after_ms = 1000;
  seeds = [ "tcp://127.0.0.1:%d" ];
  nodes = (
    %s
  );
};
""" % (self.app, extra, nodes, self.redis, self.cport["n1"], members)
        path = os.path.join(self.base, "cluster.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def health(self, name):
        st, body = http("GET", "http://127.0.0.1:%d/health" % self.http[name])
        if st != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def start(self):
        self.spawn("redis", ["redis-server", "--port", str(self.redis), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", self.base])
        wait_for("redis-server to listen", lambda: port_open(self.redis))
        conf = self.config()
        for n in ("n1", "n2"):
            d = os.path.join(self.base, n)
            os.mkdir(d)
            self.spawn(n, [os.path.join(self.bindir, self.app), "--config", conf, "--node", n,
                           "--data", d])
        for n in ("n1", "n2"):
            try:
                wait_for(n + " to see its peer up",
                         lambda n=n: (self.health(n) or {}).get("peers_up") == 1)
            except Failed:
                log(n + "'s output:\n" + self.tail(n))
                raise
        log("cluster up: n1 http %d, n2 http %d, redis %d" %
            (self.http["n1"], self.http["n2"], self.redis))

    def load(self):
        url = "127.0.0.1:%d" % self.http["n1"]
        if self.app == "flashsale":
            argv = [os.path.join(self.bindir, "flashsale-load"), "--url", url, "--base-rate", "150",
                    "--sale-rate", "150", "--sale-at", "0", "--duration", "300", "--skus", "4",
                    "--stock", "1000000", "--conns", "8", "--email-wait", "0"]
        else:
            argv = [os.path.join(self.bindir, "social-load"), "--url", url, "--users", "300",
                    "--follows", "15", "--preload-posts", "3", "--build-conns", "8",
                    "--settle", "5", "--mix", "timeline=50,posts=20,post=30", "--rate", "200",
                    "--duration", "300", "--conns", "8", "--lag-samples", "0"]
        self.spawn("load", argv)

    def kill9(self, name):
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def stop(self):
        """The load first, then the nodes (on SIGTERM they stop gracefully, closing the store),
        then Redis; a process that has not ended after DEADLINE seconds is killed."""
        for group in (("load",), ("n1", "n2"), ("redis",)):
            for name in group:
                p = self.procs.get(name)
                if p is not None and p.poll() is None:
                    p.terminate()
            for name in group:
                p = self.procs.get(name)
                if p is None:
                    continue
                try:
                    p.wait(timeout=DEADLINE)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


READ = """
const o = {};
for (const e of document.querySelectorAll('[data-k]')) o[e.dataset.k] = e.dataset.v;
const m = {};
for (const e of document.querySelectorAll('[data-member]')) m[e.dataset.member] = e.dataset.state;
const ev = [...document.querySelectorAll('#events tr[data-seq]')].map(e => e.textContent);
return {v: o, members: m, events: ev, polls: +(document.body.dataset.polls || 0),
        metrics: document.body.dataset.metrics, stale: document.body.dataset.stale || ''};
"""


def num(snap, key):
    v = snap["v"].get(key)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def moved(a, b, key):
    x, y = num(a, key), num(b, key)
    return x is not None and y is not None and y > x


def browser(base):
    o = webdriver.ChromeOptions()
    o.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1700", "--user-data-dir=" + os.path.join(base, "chromium")):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=o)


def run(app, bindir, shot, base):
    c = Cluster(app, bindir, base)
    drv = None
    try:
        c.start()
        c.load()
        drv = browser(base)
        url = "http://127.0.0.1:%d/dashboard" % c.http["n1"]
        drv.get(url)
        read = lambda: drv.execute_script(READ)

        # 1. polling, both members up
        wait_for("the page to poll three times and list n2 up",
                 lambda: (lambda s: s["polls"] >= 3 and s["members"].get("n2") == "up")(read()))
        s = read()
        log("page polling (%d polls), /metrics %s, members %s" % (s["polls"], s["metrics"],
                                                                 s["members"]))

        # 2. the numbers move
        keys = ["commits_total"]
        if app == "flashsale":
            keys.append("email_sent|email_pending")
        else:
            keys.append("fanout_total")
        if s["metrics"] == "served":
            keys += ["messages_total", "http_total"]
        a = read()

        def all_moved():
            b = read()
            ok = all(any(moved(a, b, k) for k in alts.split("|")) for alts in keys)
            return b if ok else None

        try:
            b = wait_for("%s to move between two reads" % ", ".join(keys), all_moved)
        except Failed:
            log("first read: %s\nlast read: %s" % (json.dumps(a["v"]), json.dumps(read()["v"])))
            log("load's output:\n" + c.tail("load"))
            raise
        for k in keys:
            for alt in k.split("|"):
                log("%s: %s -> %s" % (alt, a["v"].get(alt), b["v"].get(alt)))
        rates = ["commit_rate"] + (["fanout_rate"] if app == "social" else ["email_rate"])
        wait_for("a rate above zero (%s)" % " or ".join(rates),
                 lambda: any((num(read(), r) or 0) > 0 for r in rates))
        log("rates: " + ", ".join("%s %s" % (r, read()["v"].get(r)) for r in rates))

        # 3. kill -9 n2: down on the page, and its log line among the events
        c.kill9("n2")
        log("n2 killed (kill -9)")
        t0 = time.monotonic()
        wait_for("n2 to show as down", lambda: read()["members"].get("n2") == "down")
        log("n2 shown down after %.1f s" % (time.monotonic() - t0))
        line = wait_for("n2's 'is down' line among the recent events",
                        lambda: next((e for e in read()["events"]
                                      if "peer n2" in e and "is down" in e), None))
        log("event: " + line.strip())

        # 4. a screenshot, the page still live, no JavaScript error
        p0 = read()["polls"]
        wait_for("two more polls", lambda: read()["polls"] >= p0 + 2)
        if read()["stale"]:
            raise Failed("the page says n1 is not answering")
        os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
        if not drv.save_screenshot(shot):
            raise Failed("no screenshot")
        log("screenshot: " + shot)
        errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE" and
                  "/metrics" not in e.get("message", "") and
                  "/emails/stats" not in e.get("message", "")]
        if errors:
            raise Failed("JavaScript errors: %s" % errors)

        # 5. n1 stops cleanly on SIGTERM; no sanitizer report from either node (make asan / tsan)
        drv.quit()
        drv = None
        c.stop()
        if c.procs["n1"].returncode != 0:
            raise Failed("n1 exited %d on SIGTERM:\n%s" % (c.procs["n1"].returncode, c.tail("n1")))
        for n in ("n1", "n2"):
            out = c.tail(n, 100000)
            for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                         "WARNING: ThreadSanitizer", "runtime error:"):
                if mark in out:
                    raise Failed("%s: %s in its output (%s/%s.log)" % (n, mark, base, n))
    finally:
        if drv is not None:
            drv.quit()
        c.stop()


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("flashsale", "social"):
        print("usage: dashboard.py flashsale|social BIN_DIR SCREENSHOT", file=sys.stderr)
        return 2
    app, bindir, shot = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    base = tempfile.mkdtemp(prefix="troupe-dashboard-")
    try:
        run(app, bindir, shot, base)
    except Failed as e:
        log("FAILED: %s (logs in %s)" % (e, base))
        return 1
    shutil.rmtree(base, ignore_errors=True)
    log("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""bidmesh metrics end to end: a real mesh with metrics on, scraped by a real Prometheus.

Starts bidmesh-supervisor on a temp config (one router with the feed, two bid nodes, every
process and the supervisor serving metrics on free loopback ports), bids through the router, and:
  (a) fetches every endpoint and runs `promtool check metrics` on each, and checks the families
      of docs/operations.md are there;
      Each bid node must count ok bids, and the router must count bids it passed on (answered);
  (b) starts `prometheus` with a temp config scraping every endpoint each 500 ms, waits (with a
      deadline) until its HTTP API reports a bid rate above 0 on the nodes and on the router, the
      nodes' gauges (10 items open in all, idempotency records, logged batches), SIGKILLs bid
      node bid-1, and waits until the API reports bid-1's restart by the supervisor.
Everything it starts is stopped and its temp dir removed, also on failure. Deadlines are
multiplied by BIDMESH_TEST_TIME_SCALE (sanitizer builds).

Exit 77 (skip) only when prometheus or promtool is absent: tools/setup installs both.

Run: /usr/bin/python3 tests/metrics/metrics_test.py --bin-dir build/bin
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pymesh import (SCALE, bid_until, free_ports, request, router_and_two_bid_nodes, wait_for,  # noqa: E402
                    write_mesh_toml)

READY_S = 30 * SCALE
PROMETHEUS_S = 60 * SCALE
HTTP_TIMEOUT_S = 5 * SCALE
SKIP = 77

# Families every endpoint must show (docs/operations.md); names as exposed (a histogram by its
# _count series).
EXPECTED = {
    "router": ["bidmesh_router_requests_total", "bidmesh_router_requests_in_flight",
               "bidmesh_router_request_timeouts_total", "bidmesh_router_client_connections",
               "bidmesh_feed_events_total", "bidmesh_feed_subscribers"],
    "bid-1": ["bidmesh_node_requests_total", "bidmesh_node_batch_requests_count",
              "bidmesh_node_apply_seconds_count", "bidmesh_node_log_sync_seconds_count",
              "bidmesh_node_checkpoint_seconds_count", "bidmesh_node_log_written_bytes_total",
              "bidmesh_node_log_bytes", "bidmesh_node_log_segments", "bidmesh_node_store_used_bytes",
              "bidmesh_node_store_size_bytes", "bidmesh_node_items_open", "bidmesh_node_auto_closes_total",
              "bidmesh_node_idempotency_records", "bidmesh_node_events_published_total"],
    "supervisor": ["bidmesh_supervisor_node_state", "bidmesh_supervisor_node_restarts_total",
                   "bidmesh_supervisor_node_last_exit_code", "bidmesh_supervisor_node_last_exit_signal"],
}
EXPECTED["bid-2"] = EXPECTED["bid-1"]


def http_get(url):
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as r:
        return r.read().decode()


class Run:
    def __init__(self, bin_dir, prometheus, promtool):
        self.bin_dir = bin_dir
        self.prometheus_bin = prometheus
        self.promtool = promtool
        self.dir = tempfile.mkdtemp(prefix="bidmesh-metrics-")
        self.procs = []
        self.ctx = zmq.Context()
        self.stop_bidding = threading.Event()
        self.bids_ok = 0
        self.bid_error = None

    # -- the mesh -------------------------------------------------------------------------------

    def start_mesh(self):
        p = free_ports(10)
        self.endpoint = "tcp://127.0.0.1:%d" % p[0]
        self.metrics = {"router": p[5], "bid-1": p[6], "bid-2": p[7], "supervisor": p[8]}
        self.prometheus_port = p[9]
        nodes = router_and_two_bid_nodes(self.endpoint, "tcp://127.0.0.1:%d" % p[3], "tcp://127.0.0.1:%d" % p[4])
        for node in nodes:
            node["metrics"] = "127.0.0.1:%d" % self.metrics[node["name"]]
        self.config = write_mesh_toml(
            os.path.join(self.dir, "mesh.toml"),
            {"data_dir": "data", "supervisor_metrics": "127.0.0.1:%d" % self.metrics["supervisor"],
             "request_timeout_ms": 2000, "restart_intensity": 100},
            {"publish": "tcp://127.0.0.1:%d" % p[1], "collect": "tcp://127.0.0.1:%d" % p[2]},
            nodes)
        self.supervisor_out = os.path.join(self.dir, "supervisor.out")
        with open(self.supervisor_out, "w") as out:
            self.supervisor = subprocess.Popen(
                [os.path.join(self.bin_dir, "bidmesh-supervisor"), "--config", self.config],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir)
        self.procs.append(self.supervisor)

        def ready():
            if self.supervisor.poll() is not None:
                raise SystemExit("supervisor exited with %s\n%s" % (self.supervisor.returncode, self.logs()))
            with open(self.supervisor_out) as f:
                return "mesh ready" in f.read()
        wait_for("the mesh's ready line", READY_S, ready, 0.05)

    def request(self, req):
        return request(self.ctx, self.endpoint, req, HTTP_TIMEOUT_S)

    def bid_forever(self):
        """Bids on ten items until told to stop: the rate Prometheus must see."""
        def count(rep):
            if rep and rep.get("ok"):
                self.bids_ok += 1
        try:
            bid_until(self.request, ["metrics-item-%d" % i for i in range(10)], self.stop_bidding, READY_S, count)
        except Exception as e:
            self.bid_error = e

    # -- (a) every endpoint, and promtool -------------------------------------------------------

    def check_endpoints(self):
        for who, port in self.metrics.items():
            url = "http://127.0.0.1:%d/metrics" % port
            text = wait_for("%s's metrics with a bid counted" % who, READY_S,
                            lambda: self.scrape_after_bids(url, who))
            check = subprocess.run([self.promtool, "check", "metrics"], input=text, capture_output=True,
                                   text=True, timeout=60 * SCALE)
            if check.returncode != 0:
                raise AssertionError("promtool check metrics failed on %s (%s):\n%s%s"
                                     % (who, url, check.stdout, check.stderr))
            names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
            missing = [m for m in EXPECTED[who] if m not in names]
            if missing:
                raise AssertionError("%s (%s) lacks %s" % (who, url, missing))
            print("ok: %s serves %d series, promtool check metrics passes" % (who, len(text.splitlines())))

    def scrape_after_bids(self, url, who):
        text = http_get(url)
        if who.startswith("bid-"):
            # Each node owns some of the ten items: its ok bids show once it has served one.
            line = [l for l in text.splitlines()
                    if l.startswith('bidmesh_node_requests_total{op="bid",outcome="ok"}')]
            return text if line and float(line[0].split()[-1]) > 0 else None
        if who == "router":
            # The owners' replies to bids, passed on: counted as answered by the router.
            line = [l for l in text.splitlines()
                    if l.startswith('bidmesh_router_requests_total{op="bid",outcome="answered"}')]
            return text if line and float(line[0].split()[-1]) > 0 else None
        return text

    # -- (b) a real Prometheus -----------------------------------------------------------------

    def start_prometheus(self):
        pdir = os.path.join(self.dir, "prometheus")
        os.makedirs(pdir)
        cfg = os.path.join(pdir, "prometheus.yml")
        targets = ", ".join('"127.0.0.1:%d"' % p for p in self.metrics.values())
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
                    "scrape_configs:\n  - job_name: bidmesh\n    static_configs:\n"
                    "      - targets: [%s]\n" % targets)
        self.prometheus_out = os.path.join(pdir, "prometheus.out")
        with open(self.prometheus_out, "w") as out:
            self.prometheus = subprocess.Popen(
                [self.prometheus_bin, "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(pdir, "data"),
                 "--web.listen-address=127.0.0.1:%d" % self.prometheus_port, "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=pdir)
        self.procs.append(self.prometheus)
        self.api = "http://127.0.0.1:%d" % self.prometheus_port

        def ready():
            if self.prometheus.poll() is not None:
                raise SystemExit("prometheus exited with %s:\n%s" % (self.prometheus.returncode,
                                                                     open(self.prometheus_out).read()))
            return "Ready" in http_get(self.api + "/-/ready")
        wait_for("prometheus ready", PROMETHEUS_S, ready)

    def query(self, expr):
        """The values of an instant query, as {labels-json: float}."""
        body = json.loads(http_get(self.api + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        if body.get("status") != "success":
            raise AssertionError("query %s: %r" % (expr, body))
        return {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in body["data"]["result"]}

    def check_prometheus(self):
        rate = 'sum(rate(bidmesh_node_requests_total{op="bid",outcome="ok"}[5s]))'
        got = wait_for("a bid rate above 0 in Prometheus", PROMETHEUS_S,
                       lambda: [v for v in self.query(rate).values() if v > 0])
        print("ok: Prometheus reports %.1f bids/s" % got[0])
        routed = 'sum(rate(bidmesh_router_requests_total{op="bid",outcome="answered"}[5s]))'
        got = wait_for("a rate of bids answered through the router in Prometheus", PROMETHEUS_S,
                       lambda: [v for v in self.query(routed).values() if v > 0])
        print("ok: Prometheus reports %.1f bids/s answered through the router" % got[0])
        # The nodes' gauges (set once a second and at checkpoints): the ten items are open, each
        # node remembers its writes, and every node has logged and synced batches.
        wait_for("10 items open in all in Prometheus", PROMETHEUS_S,
                 lambda: list(self.query("sum(bidmesh_node_items_open)").values()) == [10])
        for expr in ("bidmesh_node_idempotency_records", "bidmesh_node_log_sync_seconds_count",
                     "bidmesh_node_store_used_bytes"):
            wait_for("%s above 0 on both nodes" % expr, PROMETHEUS_S,
                     lambda: len([v for v in self.query(expr).values() if v > 0]) == 2)
        print("ok: Prometheus reports 10 items open, idempotency records, synced batches and store use on both nodes")
        up = self.query("up")
        if len(up) != 4 or min(up.values()) != 1:
            raise AssertionError("not every endpoint is up in Prometheus: %r" % up)

        restarts = 'bidmesh_supervisor_node_restarts_total{node="bid-1"}'
        before = self.query(restarts)
        if list(before.values()) != [0]:
            raise AssertionError("bid-1 restarted before the kill: %r" % before)
        pid = self.pid_of("bid-1")
        os.kill(pid, signal.SIGKILL)
        print("killed bid-1 (pid %d)" % pid)
        wait_for("bid-1's restart in Prometheus", PROMETHEUS_S,
                 lambda: [v for v in self.query(restarts).values() if v >= 1])
        wait_for("bid-1 running again in Prometheus", PROMETHEUS_S,
                 lambda: self.query('bidmesh_supervisor_node_state{node="bid-1",state="running"} == 1'))
        sig = self.query('bidmesh_supervisor_node_last_exit_signal{node="bid-1"}')
        if list(sig.values()) != [signal.SIGKILL]:
            raise AssertionError("bid-1's last exit signal is %r, not SIGKILL" % sig)
        print("ok: Prometheus reports bid-1 restarted once, last ended by signal 9")

    def pid_of(self, name):
        """The pid of the node process the supervisor runs as `name` (its command line)."""
        want = ["--config", self.config, "--name", name]
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    args = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if args[-len(want) - 1:-1] == want or args[-len(want):] == want:
                if int(entry) != self.supervisor.pid:
                    return int(entry)
        raise AssertionError("no process of node %s" % name)

    # -- cleanup --------------------------------------------------------------------------------

    def logs(self):
        out = []
        for root, _, files in os.walk(self.dir):
            for f in files:
                if f.endswith(".log") or f.endswith(".out"):
                    with open(os.path.join(root, f), errors="replace") as fh:
                        out.append("----- %s -----\n%s" % (f, fh.read()[-4000:]))
        return "\n".join(out)

    def stop(self):
        self.stop_bidding.set()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20 * SCALE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.ctx.destroy(linger=0)
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if not prometheus or not promtool:
        print("SKIPPED: metrics_prometheus needs `prometheus` and `promtool` (Debian package prometheus; "
              "tools/setup installs it). THIS TEST DID NOT RUN.", file=sys.stderr)
        return SKIP

    run = Run(os.path.abspath(args.bin_dir), prometheus, promtool)
    ok = False
    try:
        run.start_mesh()
        bidder = threading.Thread(target=run.bid_forever, daemon=True)
        bidder.start()
        run.check_endpoints()
        run.start_prometheus()
        run.check_prometheus()
        run.stop_bidding.set()
        bidder.join(timeout=30 * SCALE)
        if run.bid_error:
            raise AssertionError("bidding failed: %r" % run.bid_error)
        print("ok: %d bids accepted during the test" % run.bids_ok)
        ok = True
    except BaseException:
        print(run.logs(), file=sys.stderr)
        raise
    finally:
        run.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

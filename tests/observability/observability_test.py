#!/usr/bin/python3
"""Logs and `bidmesh-ctl top` end to end (issue 13, points 4 and 5), through real processes.

Starts bidmesh-supervisor on a temp config (one router with the feed, two bid nodes, no metrics
addresses: top must not need them) with log_format = "json", bids through the router from a
thread, and checks:
  (a) `bidmesh-ctl --json top --count 3` prints 3 JSON lines whose bid nodes show bids/s > 0
      and a p99 commit, and whose router shows bids/s > 0;
  (b) after bid-1 is SIGKILLed, top shows bid-1 running again with restarts >= 1;
  (c) after a clean shutdown, every line of every node's log file and of the supervisor's
      output (but its one `mesh ready` stdout line) parses as JSON with ts, node, level, event
      and msg; the start, ready, checkpoint, stop events of each node appear, restart in the
      supervisor's; no line per request (fewer lines than a tenth of the bids);
  (d) the same mesh with log_format = "text": every node log line is "[NAME YYYY-MM-DD HH:MM:SS.mmm] ...".
Everything it starts is stopped and its temp dir removed, also on failure. Deadlines are
multiplied by BIDMESH_TEST_TIME_SCALE (sanitizer builds).

Run: /usr/bin/python3 tests/observability/observability_test.py --bin-dir build/bin
"""

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pymesh import (SCALE, Supervised, bid_until, free_ports, log_tails, request,  # noqa: E402
                    router_and_two_bid_nodes, wait_for, write_mesh_toml)
READY_S = 30 * SCALE
REPLY_S = 5 * SCALE
TEXT_LINE = re.compile(r"^\[[A-Za-z0-9_-]+ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] ")
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Mesh:
    def __init__(self, bin_dir, log_format):
        self.dir = tempfile.mkdtemp(prefix="bidmesh-observability-")
        self.ctx = zmq.Context()
        self.stop_bidding = threading.Event()
        self.bids_sent = 0
        self.bid_error = None
        p = free_ports(5)
        self.endpoint = "tcp://127.0.0.1:%d" % p[0]
        config = write_mesh_toml(
            os.path.join(self.dir, "mesh.toml"),
            {"data_dir": "data", "log_format": log_format, "restart_intensity": 100},
            {"publish": "tcp://127.0.0.1:%d" % p[1], "collect": "tcp://127.0.0.1:%d" % p[2]},
            router_and_two_bid_nodes(self.endpoint, "tcp://127.0.0.1:%d" % p[3], "tcp://127.0.0.1:%d" % p[4]))
        self.supervisor = Supervised(bin_dir, config, self.dir)
        self.out = self.supervisor.out
        self.ctl = self.supervisor.ctl
        self.pid_of = self.supervisor.pid_of

    def start(self):
        self.supervisor.start(READY_S)

    def request(self, req):
        return request(self.ctx, self.endpoint, req, REPLY_S)

    def bid_forever(self):
        """Bids on 20 items (both nodes own some) until told to stop."""
        def count(rep):
            self.bids_sent += 1
        try:
            bid_until(self.request, ["top-item-%d" % i for i in range(20)], self.stop_bidding, READY_S, count)
        except Exception as e:
            self.bid_error = e

    def shutdown(self):
        self.stop_bidding.set()
        code = self.supervisor.stop()
        if code == -signal.SIGKILL:
            raise AssertionError("the supervisor did not stop within 30 s")
        if code != 0:
            raise AssertionError("the supervisor exited %s" % code)

    def log_files(self):
        logs = os.path.join(self.dir, "data", "logs")
        return {f[:-4]: os.path.join(logs, f) for f in sorted(os.listdir(logs)) if f.endswith(".log")}

    def logs(self):
        return log_tails(self.dir)

    def cleanup(self):
        self.stop_bidding.set()
        self.supervisor.stop()
        self.ctx.destroy(linger=0)
        shutil.rmtree(self.dir, ignore_errors=True)


def top_samples(mesh, count):
    out = mesh.ctl("--json", "top", "--count", str(count))
    lines = out.splitlines()
    if len(lines) != count:
        raise AssertionError("top --count %d printed %d lines:\n%s" % (count, len(lines), out))
    return [json.loads(l) for l in lines]


def by_name(sample):
    return {n["name"]: n for n in sample["nodes"]}


def check_top(mesh):
    # Bids flow once the items are open; the first samples may come before.
    def busy():
        samples = top_samples(mesh, 3)
        last = by_name(samples[-1])
        for s in samples:
            if not RFC3339_MS.match(s["ts"]):
                raise AssertionError("top ts %r" % s["ts"])
        if all((last[n]["bids_per_s"] or 0) > 0 for n in ("bid-1", "bid-2", "router")):
            return samples
        return None
    samples = wait_for("top showing bids/s > 0 on bid-1, bid-2 and the router", READY_S * 2, busy, 0)
    last = by_name(samples[-1])
    for n in ("bid-1", "bid-2"):
        node = last[n]
        if node["state"] != "running" or node["p99_commit_ms"] is None or node["p99_commit_ms"] <= 0:
            raise AssertionError("top %s: %r" % (n, node))
        if not node["store_size_bytes"] or node["log_bytes"] is None:
            raise AssertionError("top %s has no store or log figures: %r" % (n, node))
    if last["router"]["store_used_bytes"] is not None:
        raise AssertionError("a router has no store: %r" % last["router"])
    print("ok: top: bid-1 %.0f bids/s (p99 commit %.2f ms), bid-2 %.0f bids/s, router %.0f bids/s"
          % (last["bid-1"]["bids_per_s"], last["bid-1"]["p99_commit_ms"], last["bid-2"]["bids_per_s"],
             last["router"]["bids_per_s"]))
    text = mesh.ctl("top", "--count", "1")
    if "BIDS/S" not in text or "bid-1" not in text:
        raise AssertionError("top's table:\n" + text)

    pid = mesh.pid_of("bid-1")
    os.kill(pid, signal.SIGKILL)
    print("killed bid-1 (pid %d)" % pid)

    def restarted():
        node = by_name(top_samples(mesh, 1)[0])["bid-1"]
        return node if node["restarts"] >= 1 and node["state"] == "running" and node["pid"] != pid else None
    node = wait_for("top showing bid-1 restarted", READY_S, restarted, 0)
    print("ok: top: bid-1 running again as pid %d, restarts %d" % (node["pid"], node["restarts"]))


def check_json_logs(mesh):
    files = mesh.log_files()
    if sorted(files) != ["bid-1", "bid-2", "router"]:
        raise AssertionError("log files: %r" % sorted(files))
    total = 0
    for node, path in sorted(files.items()) + [("supervisor", mesh.out)]:
        events = set()
        with open(path) as f:
            for line in f:
                if node == "supervisor" and line.startswith("bidmesh: mesh ready: "):
                    continue  # the readiness line on stdout is a contract of its own
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise AssertionError("%s: not a JSON line: %r" % (path, line))
                missing = [k for k in ("ts", "node", "level", "event", "msg") if k not in obj]
                if missing or not RFC3339_MS.match(obj["ts"]):
                    raise AssertionError("%s: %r lacks %r or has a bad ts" % (path, line, missing))
                want = "bidmesh-supervisor" if node == "supervisor" else node
                if obj["node"] != want:
                    raise AssertionError("%s: node %r, not %r" % (path, obj["node"], want))
                events.add(obj["event"])
                total += 1
        need = {"start", "ready", "stop"} | ({"checkpoint"} if node.startswith("bid-") else set()) | \
            ({"restart"} if node == "supervisor" else set())
        if not need <= events:
            raise AssertionError("%s: events %r lack %r" % (path, sorted(events), sorted(need - events)))
        print("ok: %s: every line is JSON; events %s" % (node, ", ".join(sorted(events))))
    if total * 10 > mesh.bids_sent:
        raise AssertionError("%d log lines for %d bids: something logs per request" % (total, mesh.bids_sent))
    print("ok: %d log lines in all for %d bids" % (total, mesh.bids_sent))


def check_text_logs(mesh):
    for node, path in sorted(mesh.log_files().items()):
        with open(path) as f:
            lines = f.read().splitlines()
        bad = [l for l in lines if not TEXT_LINE.match(l)]
        if bad or not lines:
            raise AssertionError("%s: lines without [NAME TIMESTAMP]: %r" % (path, bad[:3]))
        if not any(l.startswith("[%s " % node) for l in lines):
            raise AssertionError("%s: no line of the node itself" % path)
    print("ok: text logs: every line starts with [NAME YYYY-MM-DD HH:MM:SS.mmm]")


def run(bin_dir, log_format, steps):
    """A mesh in `log_format` through `steps(mesh)`; True when every check held."""
    mesh = Mesh(bin_dir, log_format)
    try:
        mesh.start()
        steps(mesh)
        return True
    except AssertionError as e:
        print("FAILED: %s\n%s" % (e, mesh.logs()), file=sys.stderr)
        return False
    finally:
        mesh.cleanup()


def json_steps(mesh):
    bidder = threading.Thread(target=mesh.bid_forever, daemon=True)
    bidder.start()
    check_top(mesh)
    mesh.stop_bidding.set()
    bidder.join(timeout=30 * SCALE)
    if mesh.bid_error:
        raise AssertionError("bidding failed: %r" % mesh.bid_error)
    mesh.shutdown()
    check_json_logs(mesh)


def text_steps(mesh):
    mesh.shutdown()
    check_text_logs(mesh)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args = ap.parse_args()
    bin_dir = os.path.abspath(args.bin_dir)
    if not (run(bin_dir, "json", json_steps) and run(bin_dir, "text", text_steps)):
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
